"""Issue 15 diagnostics on one GPU, DiT only (random weights, real shapes, no checkpoint, no text encoders):
what `newbie bench speed` needs decided before its full run.

- the split CFG step eager / compiled / CUDA graphs (packed CFG was measured here too, and dropped);
- where a warm compile's time goes: cuDNN attention's first call per sequence length in a fresh process,
  and second processes on the same on-disk cache with a per-block first-call timeline (cuDNN and flash);
- the native fp8 linears (precision/fp8.py): step time, error against bf16.

Writes speed-diag-<device>-<date>.json to --out after every section. Usage (device):
    python bench/speed_diag.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from newbie.bench.compile_child import compile_dit, make_dit, make_inputs, make_step, run_child
from newbie.bench.speed import _Run, _time, matmul_tflops, run_header, step_flops
from newbie.model import fused


def attention_first_calls(cfg, lengths) -> dict:
    """Seconds of the first and the second cuDNN SDPA call at each sequence length, in this fresh process."""
    out = {}
    for n in lengths:
        q = torch.randn(1, n, cfg.n_heads, cfg.head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k, v = (
            torch.randn(1, n, cfg.n_kv_heads, cfg.head_dim, device="cuda", dtype=torch.bfloat16).transpose(
                1, 2
            )
            for _ in range(2)
        )
        times = []
        for _ in range(2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.CUDNN_ATTENTION]):
                F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            torch.cuda.synchronize()
            times.append(round(time.perf_counter() - t, 4))
        out[n] = times
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--budget-s", type=float, default=330)
    ap.add_argument(
        "--only-warm", action="store_true", help="only the compile children: cold, then warm twice"
    )
    args = ap.parse_args()
    torch._dynamo.config.cache_size_limit = 64
    res: dict = run_header("random weights at the real shapes: speed and numerics only, not picture quality")
    name = res["device"].replace("NVIDIA ", "").replace(" ", "-").lower()
    path = Path(args.out) / f"speed-diag-{name}-{res['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    R = _Run(res, [path], args.budget_s)  # each section within the budget, failures recorded, JSON rewritten
    save = R.save

    def section(name, fn, need_s):
        R.section(name, need_s, fn)

    cache_dir = fused.compile_cache(f"/tmp/newbie-diag-{int(time.time())}")
    S: dict = {}

    def setup():
        S["dit"] = dit = make_dit()
        res["first_cudnn_calls_s"] = attention_first_calls(dit.cfg, (4352, 4136, 4096, 256, 40))
        x, cond, unc, grid = make_inputs(dit, 1024)
        S.update(x=x, cond=cond, unc=unc, grid=grid)
        res["matmul_tflops"] = matmul_tflops()
        res["flops_per_step"] = step_flops(dit, [256, 40], grid * grid)

    def eager():
        dit = S["dit"]
        split = make_step(dit, S["x"], S["cond"], S["unc"], S["grid"])
        with torch.no_grad():
            S["ref"] = split()
            res["eager_split_s"] = _time(split, 1, 3)

    def compiled():
        dit = S["dit"]
        split = make_step(dit, S["x"], S["cond"], S["unc"], S["grid"])
        t0 = time.perf_counter()
        compile_dit(dit, "auto")
        with torch.no_grad():
            split()
            torch.cuda.synchronize()
            res["compile_cold_split_s"] = time.perf_counter() - t0
            out = {}
            for _ in range(2):  # interleaved, twice: the spread of one version is part of the answer
                out.setdefault("split", []).append(_time(split))
            fused.use_cuda_graphs(dit)
            for _ in range(2):
                out.setdefault("split_graphed", []).append(_time(split))
            res["split_graphed_rel_err"] = float((split() - S["ref"]).norm() / S["ref"].norm())
            fused.use_cuda_graphs(dit, False)
        res["compiled_s_per_step"] = out
        best = min(min(v) for v in out.values())
        res["best_s_per_step"] = best
        res["best_pct_of_ceiling"] = res["flops_per_step"] / best / 1e12 / res["matmul_tflops"]

    def child(*flags) -> dict | str:
        try:
            return run_child(cache_dir, "--timeline", *flags, timeout=150)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return f"failed: {e}"

    def warm_children():
        out = {}
        for label, extra in (
            ("cudnn_split", ["--attention", "auto"]),
            ("flash_split", ["--attention", "flash"]),
        ):
            if R.left() < 40:
                out[label] = "not run: budget"
                continue
            out[label] = child(*extra)
            res["warm_children"] = out
            save()
        res["warm_children"] = out

    def fp8():
        from newbie.memory.quant import quantize_dit

        dit8 = make_dit()  # the same seed: the same weights as the bf16 model
        n = quantize_dit(dit8, "fp8-dynamic")
        res["fp8_linears"] = n
        split = make_step(dit8, S["x"], S["cond"], S["unc"], S["grid"])
        with torch.no_grad():
            res["fp8_eager_rel_err"] = float((split() - S["ref"]).norm() / S["ref"].norm())
            t0 = time.perf_counter()
            compile_dit(dit8, "auto")
            split()
            torch.cuda.synchronize()
            res["fp8_compile_s"] = time.perf_counter() - t0
            out = {"split": _time(split)}
            res["fp8_rel_err"] = float((split() - S["ref"]).norm() / S["ref"].norm())
            fused.use_cuda_graphs(dit8)
            out["split_graphed"] = _time(split)
            fused.use_cuda_graphs(dit8, False)
        res["fp8_s_per_step"] = out

    def children_only():
        out = {}
        for label in ("cold", "warm", "warm_again"):
            out[label] = child()
            res["compile_children"] = out
            save()

    if args.only_warm:
        section("compile_children", children_only, 60)
        return
    section("setup", setup, 30)
    section("eager", eager, 20)
    section("compiled", compiled, 60)
    section("fp8", fp8, 60)
    section("warm_children", warm_children, 40)
    save()
    print(json.dumps({k: v for k, v in res.items() if k != "warm_children"}, default=str)[:3000])


if __name__ == "__main__":
    main()
