"""One image on several GPUs: sequence parallelism (sp), CFG-parallel (cfg) and both (cfg x sp), against one.

    python bench/parallel.py                        # all GPUs, 1024 and 2048, full-size random weights
    python bench/parallel.py --gpus 4 --sizes 2048  # a subset
    python bench/parallel.py --cpu                  # logic check: CPU processes (gloo), the demo model
    python bench/parallel.py --overhead             # one GPU: the sp=1 DiT step against the code before SP
    python bench/parallel.py --layout               # one GPU: Ulysses' pack/unpack traffic per attention call

Each setting starts its own process group (newbie.parallel, one process per GPU, NCCL with NVLink multicast
off), loads the model once per process, warms up, then times `--repeats` images per size (median reported).
The single-GPU baseline is a one-process group running the same code path. CFG runs on every step
(cfg_trunc 1.0), so cfg:2 halves the work of every step. Random weights measure speed and exactness only.

Writes parallel-<device>-<date>.json to --out (default bench/results; $OUT if set): device, date, torch,
steps, caption_tokens and `runs`: [{gpus, mode, size, seconds, speedup, psnr_vs_single (null = identical),
max_pixel_diff}]. An --out ending in .json is the file itself.

--overhead compares the sp=1 step (a split CFG step: two batch-1 DiT forwards, 1024², 459 caption tokens,
bf16) of this tree (no shard: today's path plus its `rope.shard` test per attention) with dit.py from
before SP, the same weights: --baseline-rev (b160d09~1, read with git) or --baseline-file (a saved copy, for
a machine without .git: `make gpu-baseline` writes .gpu/dit_before_sp.py). The two alternate in pairs, the
order swapped every pair (old,new / new,old: clock drift hits both alike); each pair gives new/old - 1, and
the result is their median, quartiles and a 95% interval of the mean: the target is < 1 % slower.

On the GPU machine (a copy of the tree without .git, carry [".gpu"]), under a minute each on an H200:

    python bench/parallel.py --overhead --baseline-file .gpu/dit_before_sp.py --out $OUT/parallel-overhead.json
    python bench/parallel.py --layout --out $OUT/parallel-layout.json
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
from types import ModuleType

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

from newbie.errors import NewbieError  # noqa: E402 - after the sys.path lines
from newbie.parallel.launch import Placement, run_group  # noqa: E402
from newbie.parallel.mesh import Layout  # noqa: E402

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
BASELINE_REV = "b160d09~1"  # the last commit before sequence parallelism touched dit.py
DIT_PATH = "src/newbie/model/dit.py"


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
    ap.add_argument(
        "--repeats",
        type=int,
        help="timed images per setting (default 3; 1 with --cpu); with --overhead the step pairs (default 60;"
        " 6 with --cpu), with --layout the calls per timing (default 50; 10 with --cpu)",
    )
    ap.add_argument("--workdir", default="/tmp/newbie-full", help="the full-size random checkpoint (reused)")
    ap.add_argument("--out", help="result folder, or a .json file (default $OUT, else bench/results)")
    ap.add_argument("--overhead", action="store_true", help="one device: sp=1 forward vs the code before SP")
    ap.add_argument(
        "--layout", action="store_true", help="one device: the all-to-all pack/unpack memory traffic"
    )
    ap.add_argument(
        "--baseline-rev", default=BASELINE_REV, help="with --overhead: the git revision of the old dit.py"
    )
    ap.add_argument(
        "--baseline-file",
        help="with --overhead: a saved copy of the old dit.py instead of --baseline-rev (no git needed;"
        " `make gpu-baseline` writes .gpu/dit_before_sp.py)",
    )
    ap.add_argument("--write-baseline", metavar="PATH", help="save dit.py at --baseline-rev to PATH and stop")
    args = ap.parse_args()
    args.sizes = [int(s) for s in (args.sizes or ("128" if args.cpu else "1024,2048")).split(",")]
    args.steps = args.steps or (2 if args.cpu else 8)
    if args.overhead:
        args.repeats = args.repeats or (6 if args.cpu else 60)
    elif args.layout:
        args.repeats = args.repeats or (10 if args.cpu else 50)
    else:
        args.repeats = args.repeats or (1 if args.cpu else 3)
    args.modes = [
        m.strip() for m in (args.modes or (CPU_MODES if args.cpu else GPU_MODES)).split(",") if m.strip()
    ]
    if args.baseline_file and not args.overhead:
        ap.error("--baseline-file goes with --overhead")
    if args.overhead and args.repeats < 2:
        ap.error("--overhead needs --repeats of at least 2 (pairs of runs)")
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

    from newbie.parallel.runner import run, setup_rank

    mesh, pipe = setup_rank(layout, load, device)
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

STEP_FORWARDS = 2  # a split CFG step at sp=1: cond and uncond as two batch-1 forwards (sampling/guidance.py)
TIMING_BUDGET_S = 45.0  # --overhead stops adding pairs past this (at least 10 pairs): ~90 s a call on an H200
TARGET = 0.01  # issue 17: sp=1 at most 1 % slower than before SP


def baseline_source(rev: str) -> str:
    """dit.py as it was at `rev`, read with git: needs the repository (the GPU machine's copy has no .git)."""
    cmd = ["git", "show", f"{rev}:{DIT_PATH}"]
    try:
        done = subprocess.run(cmd, cwd=BENCH.parent, capture_output=True, text=True)
    except FileNotFoundError:
        done = None
    if done is None or done.returncode:
        why = "git is not installed" if done is None else (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise NewbieError(
            f"{' '.join(cmd)}: {why}; without the repository pass --baseline-file"
            " (`make gpu-baseline` writes .gpu/dit_before_sp.py)"
        )
    return done.stdout


def load_baseline(path) -> ModuleType:
    """Import a saved dit.py from before SP as the module `dit_before_sp`, against today's package.

    The b160d09~1 file imports newbie.config.DiTConfig, newbie.model.math's apply_rope, attention, rms_norm,
    rope_angles, rope_inv_freqs, timestep_embedding and newbie.model.step_cache.StepCache: all still there, so
    it runs unchanged. Should one move, the import fails here in one line that names it."""
    path = Path(path)
    if not path.is_file():
        raise NewbieError(f"--baseline-file {path}: no such file (`make gpu-baseline` writes one)")
    text = path.read_text()
    if "class NextDiT" not in text:
        raise NewbieError(f"--baseline-file {path}: no NextDiT in it, not a dit.py")
    # today's file (sharded attention: `shard`; before issue 22 also `sequence_parallel`) would compare the
    # code with itself
    if "sequence_parallel" in text or "shard" in text:
        raise NewbieError(f"--baseline-file {path}: already has sequence parallelism, not the code before it")
    spec = importlib.util.spec_from_file_location("dit_before_sp", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dit_before_sp"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        del sys.modules["dit_before_sp"]
        raise NewbieError(f"--baseline-file {path} no longer imports against today's package: {e}") from e
    return module


def paired_difference(pairs: list[tuple[float, float]], target: float = TARGET) -> dict:
    """(old, new) seconds of back-to-back runs -> new/old - 1 per pair: median, quartiles, mean with its 95%
    interval (1.96 standard errors), and the verdict against `target`: "within" when the whole interval is
    below it, "over" when the whole interval is above it, else "undecided" (more pairs needed)."""
    if len(pairs) < 2:
        raise NewbieError(f"--overhead needs at least 2 pairs of runs, got {len(pairs)}")
    rel = np.array([new / old - 1.0 for old, new in pairs])
    mean = float(rel.mean())
    half = 1.96 * float(rel.std(ddof=1)) / np.sqrt(len(rel))
    q25, q50, q75 = (float(q) for q in np.percentile(rel, [25, 50, 75]))
    lo, hi = mean - half, mean + half
    verdict = "within" if hi < target else "over" if lo > target else "undecided"
    return {"median": q50, "q25": q25, "q75": q75, "mean": mean, "ci95": [lo, hi], "verdict": verdict}


def _same(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float]:
    """Bit-identical (NaN where the other has NaN counts as equal: random weights may overflow), max |a-b|."""
    identical = bool(((a == b) | (a.isnan() & b.isnan())).all())
    return identical, float((a.float() - b.float()).nan_to_num(0.0).abs().max())


@torch.no_grad()
def overhead(args) -> dict:
    from newbie.config import DiTConfig
    from newbie.demo.tiny import tiny_dit_config
    from newbie.model.dit import NextDiT

    if args.baseline_file:
        old_module, baseline = load_baseline(args.baseline_file), f"file {args.baseline_file}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dit_before_sp.py"
            path.write_text(baseline_source(args.baseline_rev))
            old_module, baseline = load_baseline(path), f"git {args.baseline_rev}"
    device = "cpu" if args.cpu else "cuda"
    dtype = torch.float32 if args.cpu else torch.bfloat16
    # tiny: clip_text_dim = adaln_dim, the one width where the old pooled projection has today's shape, so
    # every weight is shared (as at the real widths, where both are 1024)
    cfg = tiny_dit_config(clip_text_dim=48) if args.cpu else DiTConfig()
    side, cap_len = (args.sizes[0], 40) if args.cpu else (1024, 459)
    with torch.device(device):  # built in place: a 3.5B model's init on the CPU takes minutes
        torch.manual_seed(0)
        new = NextDiT(cfg).to(dtype).eval()
        old = old_module.NextDiT(cfg).to(dtype).eval()
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
    ropes = {
        m: m.rope(torch.tensor([cap_len], device=device), cap_len, lat // 2, lat // 2) for m in (new, old)
    }

    def timed(model):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(STEP_FORWARDS):
            out = model(x, t, cap, None, pooled, ropes[model])
        _sync(device)
        return time.perf_counter() - t0, out

    warmup = 3
    for _ in range(warmup):  # kernels chosen, allocator warm, clocks up: both alike
        out_new, out_old = timed(new)[1], timed(old)[1]
    identical, max_abs_diff = _same(out_new, out_old)
    pairs = []  # (old, new) seconds, back to back
    start = time.perf_counter()
    for i in range(args.repeats):
        got = {}
        for model in (old, new) if i % 2 == 0 else (new, old):  # the order swaps every pair
            got[model] = timed(model)[0]
        pairs.append((got[old], got[new]))
        if i % 2 and len(pairs) >= 10 and time.perf_counter() - start > TIMING_BUDGET_S:
            break  # an even count, so each model went first equally often
    diff = paired_difference(pairs)
    ms_old = 1e3 * statistics.median(o for o, _ in pairs)
    ms_new = 1e3 * statistics.median(n for _, n in pairs)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "baseline": baseline,
        "size": f"{side}x{side}",
        "caption_tokens": cap_len,
        "dtype": str(dtype),
        "forwards_per_step": STEP_FORWARDS,
        "warmup_steps": warmup,
        "pairs": len(pairs),
        "timing_s": time.perf_counter() - start,
        "ms_per_step_sp1": ms_new,
        "ms_per_step_before_sp": ms_old,
        "ratio_of_medians": ms_new / ms_old,
        "relative_difference": diff,  # new/old - 1 per pair
        "target": TARGET,
        "verdict": diff["verdict"],
        "all_weights_shared": all_weights_shared,
        "identical_output": identical,
        "max_abs_diff": max_abs_diff,
        "seconds_before_sp": [o for o, _ in pairs],
        "seconds_sp1": [n for _, n in pairs],
    }


def overhead_summary(res: dict) -> str:
    d = res["relative_difference"]
    lo, hi = d["ci95"]
    return (
        f"overhead {res['device']} {res['size']} {res['dtype']}: sp=1 {res['ms_per_step_sp1']:.2f} ms/step vs"
        f" before SP ({res['baseline']}) {res['ms_per_step_before_sp']:.2f}; new/old-1 median {d['median']:+.2%}"
        f" (quartiles {d['q25']:+.2%}..{d['q75']:+.2%}, 95% CI of mean {lo:+.2%}..{hi:+.2%}, {res['pairs']}"
        f" pairs): {res['verdict']} {res['target']:.0%}; output {'identical' if res['identical_output'] else 'differs'}"
    )


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

            fns = {"ulysses": through_shard, "attention_only": direct}
            times = {name: [] for name in fns}
            with mock.patch("torch.distributed.all_to_all_single", copy_a2a):
                for _ in range(3):
                    through_shard(), direct()
                for i in range(args.repeats):  # interleaved, the order swapped each time: drift hits both
                    for name in list(fns)[:: 1 if i % 2 else -1]:
                        _sync(device)
                        t0 = time.perf_counter()
                        fns[name]()
                        _sync(device)
                        times[name].append(time.perf_counter() - t0)
            ms = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
            ms_layout = ms["ulysses"] - ms["attention_only"]
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
                    "ms_layout": ms_layout,
                    # null: the difference is inside the timing noise
                    "layout_gb_per_s": traffic / (ms_layout / 1e3) / 1e9 if ms_layout > 0 else None,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "dtype": str(dtype),
        "heads": [hq, hkv, d],
        "repeats": args.repeats,
        "rows": rows,
    }


def layout_summary(res: dict) -> str:
    cells = []
    for r in res["rows"]:
        bw = "noise" if r["layout_gb_per_s"] is None else f"{r['layout_gb_per_s']:.3g} GB/s"
        share = r["ms_layout"] / r["ms_attention_only"]
        cells.append(f"{r['size']}² sp{r['sp']} {r['ms_layout']:.3f} ms ({share:+.0%} of attention, {bw})")
    return f"layout {res['device']} {res['dtype']}, pack/unpack per attention call: " + "; ".join(cells)


def _out_path(args, name: str) -> Path:
    """--out (or $OUT, else bench/results) is a folder that gets `name`, or, ending in .json, the file."""
    out = Path(args.out or os.environ.get("OUT") or BENCH / "results")
    path = out if out.suffix == ".json" else out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    args = parse_args()
    kind = "cpu" if args.cpu else "gpu"
    try:
        if args.write_baseline:  # for a machine without the repository (--baseline-file there)
            out = Path(args.write_baseline)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(baseline_source(args.baseline_rev))
            print(out)
            return
        if args.overhead:
            res = overhead(args)
            path = _out_path(args, f"parallel-overhead-{kind}-{res['date']}.json")
            summary = overhead_summary(res)
        elif args.layout:
            res = layout_profile(args)
            path = _out_path(args, f"parallel-layout-{kind}-{res['date']}.json")
            summary = layout_summary(res)
        else:
            res, slug = speedups(args)
            path = _out_path(args, f"parallel-{slug}-{res['date']}.json")
            summary = json.dumps(
                {k: v for k, v in res.items() if k != "runs"} | {"runs": len(res.get("runs", []))}, indent=1
            )
    except NewbieError as e:  # bad input: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(summary)
    print(path)


if __name__ == "__main__":
    main()
