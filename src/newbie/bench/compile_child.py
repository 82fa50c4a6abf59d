"""`python -m newbie.bench.compile_child`: the compile of `newbie bench speed`, repeated in a fresh process.

A second process on the same machine, with the same on-disk compile cache, builds the DiT (random weights,
real shapes), switches on the same fast paths and times its first CFG step: that is the warm compile a
restarted `newbie serve` or `newbie ui` pays. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
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
    from newbie.sampling.guidance import split_pair, velocity_fn

    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)
    pair = split_pair(velocity_fn(dit, cond, rc), velocity_fn(dit, unc, ru))
    return lambda: pair(x, 0.5)


def compile_dit(dit, attention: str) -> None:
    from newbie.model import fused

    fused.enable(dit, attention)
    for block in dit.blocks():
        block.compile(fullgraph=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", default="cudnn")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args(argv)
    from newbie.model import fused

    fused.compile_cache(args.cache_dir)
    dit = make_dit()
    x, cond, unc, grid = make_inputs(dit, args.size)
    step = make_step(dit, x, cond, unc, grid)
    t0 = time.perf_counter()
    compile_dit(dit, args.attention)
    with torch.no_grad():
        step()
    torch.cuda.synchronize()
    res = {
        "compile_warm_s": time.perf_counter() - t0,
        "dynamo_counters": {
            k: dict(v)
            for k, v in torch._dynamo.utils.counters.items()
            if k in ("inductor", "aot_autograd", "stats")
        },
    }
    print(json.dumps(res, default=str))
    return res


if __name__ == "__main__":
    main()
