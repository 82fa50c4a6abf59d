"""Second process for bench/speed_probe.py and `newbie bench speed`: compile with a warm on-disk cache."""

from __future__ import annotations

import time

import torch


def make_dit():
    from newbie.config import DiTConfig
    from newbie.model.dit import NextDiT

    torch.manual_seed(0)
    with torch.device("cuda"):
        dit = NextDiT(DiTConfig()).to(torch.bfloat16).eval()
    return dit


def make_inputs(dit, size=1024, L=256, Lu=40):
    from newbie.model.text import TextEmbeds

    g = torch.Generator(device="cuda").manual_seed(0)
    lat = size // 8
    x = torch.randn(1, 16, lat, lat, device="cuda", generator=g)
    cond = TextEmbeds(
        torch.randn(1, L, dit.cfg.cap_feat_dim, device="cuda", generator=g).bfloat16(),
        torch.ones(1, L, dtype=torch.bool, device="cuda"),
        torch.randn(1, dit.cfg.clip_text_dim, device="cuda", generator=g).bfloat16(),
    )
    unc = TextEmbeds(cond.cap_feats[:, :Lu] * 0.5, cond.cap_mask[:, :Lu], cond.pooled * 0.5)
    return x, cond, unc, lat // 2


def make_step(dit, x, cond, unc, grid):
    from newbie.sampling.guidance import split_pair, velocity_fn

    rc = dit.rope(cond.cap_mask.sum(1), cond.cap_feats.shape[1], grid, grid)
    ru = dit.rope(unc.cap_mask.sum(1), unc.cap_feats.shape[1], grid, grid)
    pair = split_pair(velocity_fn(dit, cond, rc), velocity_fn(dit, unc, ru))
    return lambda: pair(x, 0.5)


def main(attention: str, size: int = 1024, dynamic: bool | None = None, time_step: bool = False) -> float:
    t_start = time.perf_counter()
    from newbie.model import fused

    dit = make_dit()
    x, cond, unc, grid = make_inputs(dit, size)
    step = make_step(dit, x, cond, unc, grid)
    fused.enable(dit, attention)
    t0 = time.perf_counter()
    for b in dit.blocks():
        b.compile(fullgraph=True, dynamic=dynamic)
    with torch.no_grad():
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    if time_step:
        with torch.no_grad():
            for _ in range(2):
                step()
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            print(f"step_s {(time.perf_counter() - t1) / 5:.4f}")
    print(f"process start to model ready {t0 - t_start:.1f} s")
    print(f"compile_warm_s {warm:.2f}")
    return warm
