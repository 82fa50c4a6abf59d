"""The precision study at the real size on a GPU: fp32 (the reference), bf16, fp16 and, where torchao and its
kernels are there, int8/fp8 weights, on the real-shape RANDOM-weight checkpoint of bench/gpu_check.py,
1024x1024, 2 XML multi-character prompts x 1 seed, 10 Euler steps (so fp32 fits a 10-minute call).

Random weights measure numerics and cost (time, memory, NaN/overflow, agreement between dtypes), never
picture quality. Writes report.md, report.json, contact-sheet.png and time-memory.png (when matplotlib is
installed) to $OUT (or ./precision-full).

    python bench/precision_full.py [--workdir /tmp/newbie-full] [--steps 10] [--size 1024]
    python bench/precision_full.py --tiny      # a dry run on CPU with a tiny checkpoint, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for gpu_check

NOTE = (
    "Random weights at the real shapes: these numbers measure numerics and cost (time, memory, overflow, "
    "agreement with fp32), not picture quality."
)


def build_checkpoint(root: Path, tiny: bool) -> dict:
    if (root / "vae" / "config.json").exists():
        return {"checkpoint": str(root), "reused": True}
    t0 = time.perf_counter()
    if tiny:
        from newbie.demo.tiny import write_tiny_checkpoint

        write_tiny_checkpoint(root, seed=0)
        return {"checkpoint": str(root), "write_s": time.perf_counter() - t0, "tiny": True}
    from gpu_check import write_full_size  # the same random real-shape checkpoint as the GPU check

    return {"checkpoint": str(root), **write_full_size(root)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--tiny", action="store_true", help="tiny checkpoint, 64x64, on the default device (dry run)"
    )
    ap.add_argument(
        "--workdir", help="checkpoint folder (default /tmp/newbie-full, or /tmp/newbie-tiny-precision)"
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, help="square image side (default 1024, 64 with --tiny)")
    ap.add_argument("--dtypes", default="fp32,bf16,fp16,int8,fp8,fp8-dynamic")
    ap.add_argument("--cell", type=int, default=256, help="contact-sheet tile width (keeps the PNG small)")
    args = ap.parse_args()

    import torch

    from newbie.bench.prompts import NEWBIE_PROMPTS
    from newbie.bench.report import table_lines, write_report
    from newbie.bench.study import StudyConfig, run_study

    root = Path(args.workdir or ("/tmp/newbie-tiny-precision" if args.tiny else "/tmp/newbie-full"))
    out = Path(os.environ.get("OUT", "precision-full"))
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --tiny for a CPU dry run")
    info = build_checkpoint(root, args.tiny)
    print(info, flush=True)
    size = args.size or (64 if args.tiny else 1024)
    cfg = StudyConfig(
        dtypes=[d.strip() for d in args.dtypes.split(",") if d.strip()],
        prompts=list(NEWBIE_PROMPTS[:2]),
        seeds=[0],
        model=str(root),
        steps=args.steps,
        sampler="euler",
        width=size,
        height=size,
        warmup_steps=2,
        note=NOTE if not args.tiny else "Tiny random checkpoint: a dry run of the script, not a measurement.",
    )
    t0 = time.perf_counter()
    result = run_study(cfg, log=lambda m: print(f"[{time.perf_counter() - t0:6.1f}s] {m}", flush=True))
    result.meta.update(info)
    result.meta["study_s"] = time.perf_counter() - t0
    paths = write_report(result, out, cell=args.cell)
    print("\n".join(table_lines(result)))
    for p in paths:
        print(f"{p} {p.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
