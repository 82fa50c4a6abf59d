"""Memory plans at full size on a GPU: each VRAM budget's plan, its peak, time and PSNR against all-resident.

The checkpoint is the random-weight, real-shape one of bench/gpu_check.py (numerics and cost only, not
picture quality). Peak = torch.cuda.max_memory_allocated over the whole generate call.
Writes memory-<device>-<date>.json to $OUT (or bench/results).

    python bench/memory_plans.py [--budgets 24,12,8,6,4] [--steps 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_check import long_xml_prompt, write_full_size  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run_plan(
    root: Path, budget: float | None, steps: int, prompt: str
) -> tuple[dict, np.ndarray, torch.Tensor]:
    import newbie

    t0 = time.perf_counter()
    pipe = newbie.load(root, device="cuda", dtype="bf16", vram=budget, plan_size=(1024, 1024))
    load_s = time.perf_counter() - t0
    stage_peaks = {}
    stage = pipe.stage

    @contextmanager
    def measured(name):
        torch.cuda.reset_peak_memory_stats()
        with stage(name):
            yield
        stage_peaks[name] = torch.cuda.max_memory_allocated() / 2**30

    kw = dict(seed=7, steps=steps, width=1024, height=1024, sampler="euler", cfg_trunc=1.0)
    pipe.generate(prompt, **{**kw, "steps": 1, "width": 256, "height": 256})  # warm-up (kernels, cache)
    pipe.embed_cache.memory.clear()  # time the text encoders too
    torch.cuda.synchronize()
    pipe.stage = measured
    torch.cuda.reset_peak_memory_stats()
    start_alloc = torch.cuda.memory_allocated() / 2**30
    t0 = time.perf_counter()
    peak = 0.0
    gen = pipe.generate(prompt, **kw)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = max(stage_peaks.values())
    plan = pipe.plan
    row = {
        "budget_gib": budget,
        "plan": plan.name if plan else "resident (no budget)",
        "describe": plan.describe() if plan else "all resident",
        "predicted_peak_gib": plan.predicted_peak_gib if plan else None,
        "peak_gib": peak,
        "stage_peaks_gib": stage_peaks,
        "resident_between_calls_gib": start_alloc,
        "seconds": seconds,
        "timings": gen.timings,
        "load_s": load_s,
        "warnings": gen.recipes[0].warnings,
    }
    image = np.asarray(gen.images[0])
    latents = gen.latents.clone()
    del pipe, gen
    gc.collect()
    torch.cuda.empty_cache()
    return row, image, latents


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/newbie-full")
    ap.add_argument("--budgets", default="24,12,8,6,4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--one", type=float, help="(internal) run one budget and print its row")
    args = ap.parse_args()
    if args.one is not None:
        one(args.one, args.steps, args.workdir)
        return
    out_dir = Path(os.environ.get("OUT", "bench/results"))
    root = Path(args.workdir)
    if not (root / "vae" / "config.json").exists():
        write_full_size(root)
    prompt = long_xml_prompt()
    res = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "size": "1024x1024",
        "steps": args.steps,
        "sampler": "euler",
        "cfg": "5.0 on every step",
        "note": "random weights at the real shapes: memory, time and numerics only, not picture quality",
        "plans": [],
    }
    ref_row, ref_img, ref_lat = run_plan(root, None, args.steps, prompt)
    ref_row.update(psnr_vs_resident=None, bit_identical=True)
    Path("/tmp/newbie-memory-ref.json").write_text(json.dumps(ref_row))
    res["plans"].append(ref_row)
    print(json.dumps(ref_row), flush=True)
    ref_path = Path("/tmp/newbie-memory-ref.pt")
    torch.save({"img": torch.from_numpy(ref_img.copy()), "lat": ref_lat}, ref_path)
    for budget in [float(b) for b in args.budgets.split(",")]:
        # each plan in a fresh process: no memory left over from the previous one
        import subprocess

        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(budget),
                "--steps",
                str(args.steps),
                "--workdir",
                args.workdir,
            ],
            capture_output=True,
            text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"budget_gib": budget, "error": proc.stderr[-400:]}
        res["plans"].append(row)
        print(json.dumps(row), flush=True)
    _finish(res, out_dir)


def one(budget: float, steps: int, workdir: str) -> None:
    ref = torch.load("/tmp/newbie-memory-ref.pt")
    ref_img, ref_lat = ref["img"].numpy(), ref["lat"]
    ref_seconds = json.loads(Path("/tmp/newbie-memory-ref.json").read_text())["seconds"]
    try:
        row, img, lat = run_plan(Path(workdir), budget, steps, long_xml_prompt())
        # identical = same latents and same decoded pixels (VAE tiling changes only the latter)
        same = bool(torch.equal(lat, ref_lat)) and np.array_equal(img, ref_img)
        row.update(
            bit_identical=same,
            latents_identical=bool(torch.equal(lat, ref_lat)),
            psnr_vs_resident=None if same else psnr(img, ref_img),
            slowdown_vs_resident=row["seconds"] / ref_seconds,
        )
    except Exception as e:  # a plan that fails is a result too
        row = {"budget_gib": budget, "error": f"{type(e).__name__}: {e}"[:400]}
    print(json.dumps(row), flush=True)


def _finish(res: dict, out_dir: Path) -> None:
    name = res["device"].replace("NVIDIA ", "").replace(" ", "-").lower()
    (out_dir / f"memory-{name}-{res['date']}.json").write_text(json.dumps(res, indent=1))
    print(f"{'budget':>7} {'plan':<12} {'pred':>5} {'peak':>6} {'sec':>6} {'slow':>5} identical psnr")
    for r in res["plans"]:
        if "error" in r:
            print(f"{r['budget_gib']:>7} ERROR {r['error']}")
            continue
        print(
            f"{str(r['budget_gib']):>7} {r['plan']:<12} {r['predicted_peak_gib'] or 0:5.1f} {r['peak_gib']:6.2f} "
            f"{r['seconds']:6.2f} {r.get('slowdown_vs_resident', 1):5.2f} {r['bit_identical']} {r['psnr_vs_resident']}"
        )


if __name__ == "__main__":
    main()
