"""`python -m newbie.bench.compile_child`: the compile of `newbie bench speed`, repeated in a fresh process.

A second process on the same machine, with the same on-disk compile cache, builds the DiT (random weights,
real shapes), switches on the same fast paths and times its first CFG step: that is the warm compile a
restarted `newbie serve` or `newbie ui` pays. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def make_dit(dtype=torch.bfloat16):
    from newbie.config import DiTConfig
    from newbie.model.dit import NextDiT

    torch.manual_seed(0)
    with torch.device("cuda"):
        return NextDiT(DiTConfig()).to(dtype).eval()


def make_inputs(dit, size: int = 1024, cap_tokens: int = 256, uncond_tokens: int = 40):
    """Latent noise and a CFG pair of random caption embeddings (cond `cap_tokens` long, uncond shorter),
    on the DiT's device and in its dtype."""
    from newbie.model.text import TextEmbeds

    p = next(dit.parameters())
    dev, dtype = p.device, p.dtype
    g = torch.Generator(device=dev).manual_seed(0)
    lat = size // 8
    x = torch.randn(1, 16, lat, lat, device=dev, generator=g)
    cond = TextEmbeds(
        torch.randn(1, cap_tokens, dit.cfg.cap_feat_dim, device=dev, generator=g).to(dtype),
        torch.ones(1, cap_tokens, dtype=torch.bool, device=dev),
        torch.randn(1, dit.cfg.clip_text_dim, device=dev, generator=g).to(dtype),
    )
    short = slice(0, uncond_tokens)
    unc = TextEmbeds(cond.cap_feats[:, short] * 0.5, cond.cap_mask[:, short], cond.pooled * 0.5)
    return x, cond, unc, lat // 2


def make_step(dit, x, cond, unc, grid):
    """One CFG step as the pipeline runs it: two unmasked forwards (RoPE tables built once)."""
    from newbie.sampling.guidance import branch_model, split_pair

    dtype = next(dit.parameters()).dtype
    pair = split_pair(*(branch_model(dit, e, (grid, grid), x.device, dtype) for e in (cond, unc)))
    return lambda: pair(x, 0.5)


class _Timed(torch.nn.Module):
    """A block called through a synchronised wall clock (outside its compiled region)."""

    def __init__(self, block, kind: str, rows: list):
        super().__init__()
        self.block, self.kind, self.rows = block, kind, rows

    def forward(self, x, *args, **kwargs):
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = self.block(x, *args, **kwargs)
        if x.is_cuda:
            torch.cuda.synchronize()
        self.rows.append((self.kind, tuple(x.shape[:2]), round(time.perf_counter() - t, 4)))
        return out


def first_calls(dit):
    """Wrap every block so each call's wall time is recorded: on a first step this shows which (block kind,
    sequence length) pays what, beside dynamo's own compile_times. Returns (rows, undo)."""
    rows: list = []
    groups = {name: getattr(dit, name) for name in ("layers", "noise_refiner", "context_refiner")}
    for name, group in groups.items():
        for i, block in enumerate(group):
            group[i] = _Timed(block, name, rows)

    def undo():
        for group in groups.values():
            for i, wrapped in enumerate(group):
                group[i] = wrapped.block

    return rows, undo


def compile_dit(dit, attention: str) -> None:
    from newbie.model import fused

    fused.enable(dit, attention)
    fused.compile_blocks(dit)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--timeline", action="store_true", help="time each block's first calls (adds syncs)")
    ap.add_argument("--tf32", action="store_true", help="as a parent that allows TF32 matmuls (a cache key)")
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    from newbie.model import fused

    fused.compile_cache(args.cache_dir)
    dit = make_dit()
    x, cond, unc, grid = make_inputs(dit, args.size)
    step = make_step(dit, x, cond, unc, grid)
    t0 = time.perf_counter()
    compile_dit(dit, args.attention)
    rows, undo = first_calls(dit) if args.timeline else ([], lambda: None)
    with torch.no_grad():
        step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    undo()
    t1 = time.perf_counter()
    with torch.no_grad():
        step()
    torch.cuda.synchronize()
    res = {
        "compile_warm_s": first,
        "second_step_s": time.perf_counter() - t1,
        "attention": args.attention,
        "compile_times": str(torch._dynamo.utils.compile_times())[:6000],
        "first_calls": _summarise(rows),
        "dynamo_counters": {
            k: dict(v)
            for k, v in torch._dynamo.utils.counters.items()
            if k in ("inductor", "aot_autograd", "stats")
        },
    }
    print(json.dumps(res, default=str))
    return res


def run_child(cache_dir: str, *flags: str, timeout: float = 150.0) -> dict:
    """This module in a fresh process on `cache_dir` (a restarted server's compile), with dynamo's recompile
    log on: its JSON line, plus `recompile_reasons` (which guard split the blocks' graphs). A failed child
    raises RuntimeError with the end of its stderr."""
    cmd = [sys.executable, "-m", "newbie.bench.compile_child", "--cache-dir", cache_dir, *flags]
    env = {**os.environ, "TORCH_LOGS": "recompiles"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"compile child exited {r.returncode}: {r.stderr.strip()[-300:]}")
    child = json.loads(lines[-1])
    err = r.stderr.splitlines()
    child["recompile_reasons"] = [
        " | ".join(ln.strip()[:300] for ln in err[i : i + 4])
        for i, ln in enumerate(err)
        if "Recompiling function" in ln
    ][:12]
    return child


def _summarise(rows: list) -> list:
    """(kind, shape) -> [calls, first call s, sum of the rest s], in the order first seen."""
    out: dict = {}
    for kind, shape, sec in rows:
        e = out.setdefault(f"{kind} {shape}", [0, sec, 0.0])
        e[0] += 1
        if e[0] > 1:
            e[2] = round(e[2] + sec, 4)
    return [[k, *v] for k, v in out.items()]


if __name__ == "__main__":
    main()
