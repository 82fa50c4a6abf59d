"""One image on several GPUs: sequence parallelism (sp), CFG-parallel (cfg) and both (cfg x sp), against one.

    python bench/parallel.py                        # all GPUs, 1024 and 2048, full-size random weights
    python bench/parallel.py --gpus 4 --sizes 2048  # a subset
    python bench/parallel.py --cpu                  # logic check: CPU processes (gloo), the demo model
    python bench/parallel.py --overhead             # one GPU: the sp=1 DiT forward against the code before SP
    python bench/parallel.py --layout               # one GPU: Ulysses' pack/unpack traffic per attention call

Each setting starts its own process group (newbie.parallel, one process per GPU, NCCL with NVLink multicast
off), loads the model once per process, warms up, then times `--repeats` images per size (median reported).
The single-GPU baseline is a one-process group running the same code path. CFG runs on every step
(cfg_trunc 1.0), so cfg:2 halves the work of every step. Random weights measure speed and exactness only.

Writes parallel-<device>-<date>.json to --out (default bench/results; $OUT if set): device, date, torch,
steps, caption_tokens and `runs`: [{gpus, mode, size, seconds, speedup, psnr_vs_single (null = identical),
max_pixel_diff}].

--overhead compares the DiT forward of this tree (sequence_parallel None: today's path plus one attribute
test per layer) with dit.py as it was at --baseline-rev (b160d09~1 is the last one before SP), the same
weights, alternating runs, median of --repeats: the target is < 1 % slower.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

from newbie.parallel.launch import Placement, run_group  # noqa: E402 - after the sys.path lines
from newbie.parallel.mesh import Layout, build_mesh  # noqa: E402

MODES = {  # name -> layout, in the order they run
    "sp2": Layout(1, 2),
    "cfg2": Layout(2, 1),
    "sp4": Layout(1, 4),
    "cfg2xsp2": Layout(2, 2),
    "sp8": Layout(1, 8),
    "cfg2xsp4": Layout(2, 4),
    "sp3": Layout(1, 3),
    "cfg2xsp3": Layout(2, 3),  # the demo model's 3 key-value heads (--cpu check only)
}
GPU_MODES, CPU_MODES = "sp2,cfg2,sp4,cfg2xsp2,sp8,cfg2xsp4", "cfg2,sp3,cfg2xsp3"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cpu", action="store_true", help="CPU processes (gloo) and the demo model: a logic check"
    )
    ap.add_argument("--gpus", type=int, help="use at most this many GPUs (default: all)")
    ap.add_argument(
        "--modes", help=f"comma list of {', '.join(MODES)} (default {GPU_MODES}; {CPU_MODES} with --cpu)"
    )
    ap.add_argument("--sizes", help="comma list of square sides (default 1024,2048; 128 with --cpu)")
    ap.add_argument("--steps", type=int, help="sampler steps (default 8; 2 with --cpu)")
    ap.add_argument("--repeats", type=int, help="timed images per setting (default 3; 1 with --cpu)")
    ap.add_argument("--workdir", default="/tmp/newbie-full", help="the full-size random checkpoint (reused)")
    ap.add_argument("--out", help="result folder (default $OUT, else bench/results)")
    ap.add_argument("--overhead", action="store_true", help="one device: sp=1 forward vs the code before SP")
    ap.add_argument(
        "--layout", action="store_true", help="one device: the all-to-all pack/unpack memory traffic"
    )
    ap.add_argument(
        "--baseline-rev", default="b160d09~1", help="with --overhead: the git revision of the old dit.py"
    )
    args = ap.parse_args()
    args.sizes = [int(s) for s in (args.sizes or ("128" if args.cpu else "1024,2048")).split(",")]
    args.steps = args.steps or (2 if args.cpu else 8)
    args.repeats = args.repeats or (1 if args.cpu else 3)
    args.modes = [
        m.strip() for m in (args.modes or (CPU_MODES if args.cpu else GPU_MODES)).split(",") if m.strip()
    ]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    return args


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _rank(rank, world, device, layout, load, prompt, sizes, steps, repeats):
    """Every rank: load once, then per size a warm-up image and `repeats` timed ones (rank 0 keeps the times
    and the last image)."""
    import torch.distributed as dist

    import newbie
    from newbie.parallel.runner import configure, run

    mesh = build_mesh(layout)
    pipe = newbie.load(**load, device=device)
    configure(pipe, mesh)
    out = {"caption_tokens": pipe.text.count_tokens(prompt)}
    for size in sizes:
        settings = {"seed": 42, "steps": steps, "cfg": 5.0, "cfg_trunc": 1.0, "width": size, "height": size}
        run(pipe, pipe.request(prompt, **{**settings, "steps": 1}), mesh)  # warm-up: kernels, NCCL rings
        times = []
        for _ in range(repeats):
            dist.barrier()
            _sync(device)
            t0 = time.perf_counter()
            gen = run(pipe, pipe.request(prompt, **settings), mesh)
            _sync(device)
            times.append(time.perf_counter() - t0)
        if rank == 0:
            out[size] = {
                "seconds": statistics.median(times),
                "runs": times,
                "timings": gen.timings,
                "image": np.asarray(gen.images[0]),
            }
    return out if rank == 0 else None


def _psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """dB against the single-GPU image; None when identical (JSON has no infinity)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _device_name(args) -> tuple[str, str]:
    if args.cpu:
        return "cpu", "cpu"
    name = torch.cuda.get_device_name(0)
    slug = name.lower().replace("nvidia", "").strip().split()[-1]
    return name, f"{args.gpus}x{slug}"


def speedups(args) -> tuple[dict, str]:
    if args.cpu:
        load, prompt = {"path": None, "dtype": "fp32"}, "1girl, red_hair, smile"
        available = 8
    else:
        from gpu_check import long_xml_prompt, write_full_size

        available = torch.cuda.device_count()
        if available == 0:
            sys.exit("no CUDA GPU: run with --cpu for the logic check")
        if not (Path(args.workdir) / "vae" / "config.json").exists():
            write_full_size(Path(args.workdir))
        load, prompt = {"path": args.workdir, "dtype": "bf16"}, long_xml_prompt()
    args.gpus = min(args.gpus or available, available)
    device = "cpu" if args.cpu else "cuda"
    name, slug = _device_name(args)
    res = {
        "device": name,
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "steps": args.steps,
        "cfg": 5.0,
        "cfg_trunc": 1.0,
        "repeats": args.repeats,
        "sizes": args.sizes,
        "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0"),
        "runs": [],
    }
    common = (load, prompt, args.sizes, args.steps, args.repeats)
    single = run_group(_rank, (Layout(1, 1), *common), Placement.for_world(1, device))[0]
    res["caption_tokens"] = single["caption_tokens"]
    for size in args.sizes:
        res["runs"].append(
            {
                "gpus": 1,
                "mode": "single",
                "size": size,
                "seconds": single[size]["seconds"],
                "speedup": 1.0,
                "psnr_vs_single": None,
                "max_pixel_diff": 0,
                "timings": single[size]["timings"],
            }
        )
    for mode in args.modes:
        layout = MODES[mode]
        if layout.world > args.gpus:
            print(f"skip {mode}: needs {layout.world} GPUs", file=sys.stderr)
            continue
        got = run_group(_rank, (layout, *common), Placement.for_world(layout.world, device))[0]
        for size in args.sizes:
            a, b = got[size]["image"], single[size]["image"]
            res["runs"].append(
                {
                    "gpus": layout.world,
                    "mode": mode,
                    "size": size,
                    "seconds": got[size]["seconds"],
                    "speedup": single[size]["seconds"] / got[size]["seconds"],
                    "psnr_vs_single": _psnr(a, b),
                    "max_pixel_diff": int(np.abs(a.astype(int) - b.astype(int)).max()),
                    "timings": got[size]["timings"],
                }
            )
            print(json.dumps(res["runs"][-1]), file=sys.stderr, flush=True)
    return res, slug


# -- sp=1 overhead against the code before sequence parallelism --


def _old_dit_module(rev: str):
    text = subprocess.run(
        ["git", "show", f"{rev}:src/newbie/model/dit.py"],
        cwd=BENCH.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "dit_before_sp.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("dit_before_sp", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dit_before_sp"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def overhead(args) -> dict:
    from newbie.config import DiTConfig
    from newbie.demo.tiny import tiny_dit_config
    from newbie.model.dit import NextDiT

    device = "cpu" if args.cpu else "cuda"
    dtype = torch.float32 if args.cpu else torch.bfloat16
    cfg = tiny_dit_config() if args.cpu else DiTConfig()
    side, cap_len = (args.sizes[0], 40) if args.cpu else (1024, 459)
    old_module = _old_dit_module(args.baseline_rev)
    torch.manual_seed(0)
    new = NextDiT(cfg).to(device, dtype).eval()
    old = old_module.NextDiT(cfg).to(device, dtype).eval()
    # the same weights where the shapes agree (all of them at the real widths; the tiny --cpu config's pooled
    # projection changed shape after SP's baseline, and costs nothing either way)
    old_state = old.state_dict()
    same = {k: v for k, v in new.state_dict().items() if k in old_state and old_state[k].shape == v.shape}
    old.load_state_dict(same, strict=False)
    all_weights_shared = len(same) == len(old_state)
    g = torch.Generator(device="cpu").manual_seed(0)
    lat = side // 8
    x = torch.randn(1, cfg.in_channels, lat, lat, generator=g).to(device, dtype)
    t = torch.rand(1, generator=g).to(device)
    cap = torch.randn(1, cap_len, cfg.cap_feat_dim, generator=g).to(device, dtype)
    pooled = torch.randn(1, cfg.clip_text_dim, generator=g).to(device, dtype)
    rope_new = new.rope(torch.tensor([cap_len], device=device), cap_len, lat // 2, lat // 2)
    rope_old = old.rope(torch.tensor([cap_len], device=device), cap_len, lat // 2, lat // 2)

    def timed(model, rope):
        _sync(device)
        t0 = time.perf_counter()
        out = model(x, t, cap, None, pooled, rope)
        _sync(device)
        return time.perf_counter() - t0, out

    for _ in range(5):  # warm-up both
        out_new, out_old = timed(new, rope_new)[1], timed(old, rope_old)[1]
    times_new, times_old = [], []
    reps = max(args.repeats, 10)
    for i in range(reps):  # alternating, each first every other time: clocks and thermals hit both alike
        for model in (new, old) if i % 2 else (old, new):
            s, out = timed(model, rope_new if model is new else rope_old)
            (times_new if model is new else times_old).append(s)
            out_new, out_old = (out, out_old) if model is new else (out_new, out)
    ms_new, ms_old = 1e3 * statistics.median(times_new), 1e3 * statistics.median(times_old)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "baseline_rev": args.baseline_rev,
        "size": f"{side}x{side}",
        "caption_tokens": cap_len,
        "dtype": str(dtype),
        "repeats": reps,
        "ms_per_forward_sp1": ms_new,
        "ms_per_forward_before_sp": ms_old,
        "ratio": ms_new / ms_old,
        "all_weights_shared": all_weights_shared,
        "identical_output": bool(torch.equal(out_new, out_old)),
    }


@torch.no_grad()
def layout_profile(args) -> dict:
    """One device: the cost of Ulysses' re-layout around one attention call, for the rank of an sp-way group.
    The all-to-all is replaced by a local copy of the same bytes (what NCCL's copy engine reads and writes;
    the link time comes on top, (sp-1)/sp of the bytes), so this measures the pack/unpack memory traffic:
    attention through Shard.attention minus the same attention called directly."""
    from unittest import mock

    from newbie.config import DiTConfig
    from newbie.demo.tiny import tiny_dit_config
    from newbie.model.math import attention
    from newbie.parallel.sequence import SequenceGroup

    device = "cpu" if args.cpu else "cuda"
    dtype = torch.float32 if args.cpu else torch.bfloat16
    cfg = tiny_dit_config(n_heads=8, n_kv_heads=8, dim=96, axes_dims=(4, 4, 4)) if args.cpu else DiTConfig()
    hq, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rows = []
    for side in args.sizes:
        n_all = 459 + (side // 16) ** 2  # a long caption + the image tokens of one CFG branch
        for sp in (2, 4, 8):
            if hkv % sp:
                continue
            n_all_even = n_all - n_all % sp  # even shards: the fake all-to-all is a plain copy
            n = n_all_even // sp
            shard = SequenceGroup(None, 0, sp).split(n_all_even)
            g = torch.Generator(device="cpu").manual_seed(0)
            q = torch.randn(1, n, hq, d, generator=g).to(device, dtype)
            k, v = (torch.randn(1, n, hkv, d, generator=g).to(device, dtype) for _ in range(2))
            qf = torch.randn(1, n_all_even, hq // sp, d, generator=g).to(device, dtype)
            kf, vf = (
                torch.randn(1, n_all_even, hkv // sp, d, generator=g).to(device, dtype) for _ in range(2)
            )

            def copy_a2a(out, inp, *a, **kw):
                out.copy_(inp.view_as(out))

            def through_shard(shard=shard, q=q, k=k, v=v):
                return shard.attention(q, k, v, None)

            def direct(qf=qf, kf=kf, vf=vf):
                return attention(qf, kf, vf, None)

            with mock.patch("torch.distributed.all_to_all_single", copy_a2a):
                ms = {}
                for name, fn in (("ulysses", through_shard), ("attention_only", direct)):
                    for _ in range(3):
                        fn()
                    times = []
                    for _ in range(max(args.repeats, 10)):
                        _sync(device)
                        t0 = time.perf_counter()
                        fn()
                        _sync(device)
                        times.append(time.perf_counter() - t0)
                    ms[name] = 1e3 * statistics.median(times)
            elem = torch.tensor([], dtype=dtype).element_size()
            sent = n * (hq + 2 * hkv) * d * elem + n * hq * d * elem  # qkv out, attention output back
            # qkv: one packing pass + the copy; output: the copy + one unpacking pass (read + write each)
            traffic = 4 * sent
            rows.append(
                {
                    "size": side,
                    "sp": sp,
                    "tokens": n_all_even,
                    "tokens_per_rank": n,
                    "a2a_bytes_per_rank_per_layer": sent,
                    "off_device_bytes_per_rank_per_layer": sent * (sp - 1) // sp,
                    "ms_ulysses": ms["ulysses"],
                    "ms_attention_only": ms["attention_only"],
                    "ms_layout": ms["ulysses"] - ms["attention_only"],
                    "layout_gb_per_s": traffic
                    / max(1e-9, (ms["ulysses"] - ms["attention_only"]) / 1e3)
                    / 1e9,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "dtype": str(dtype),
        "heads": [hq, hkv, d],
        "rows": rows,
    }


def main() -> None:
    args = parse_args()
    out_dir = Path(args.out or os.environ.get("OUT") or BENCH / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "cpu" if args.cpu else "gpu"
    if args.overhead:
        res = overhead(args)
        path = out_dir / f"parallel-overhead-{kind}-{res['date']}.json"
    elif args.layout:
        res = layout_profile(args)
        path = out_dir / f"parallel-layout-{kind}-{res['date']}.json"
    else:
        res, slug = speedups(args)
        path = out_dir / f"parallel-{slug}-{res['date']}.json"
    path.write_text(json.dumps(res, indent=1))
    print(
        json.dumps(
            {k: v for k, v in res.items() if k != "runs"} | {"runs": len(res.get("runs", []))}, indent=1
        )
    )
    print(path)


if __name__ == "__main__":
    main()
