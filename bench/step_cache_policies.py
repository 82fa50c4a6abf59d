"""Step cache policies: DiT calls, PSNR against no cache, and binding on the demo model's trained trajectory;
or (--random) calls and PSNR on a random-weight DiT's trajectory, the CPU twin of `newbie bench speed`'s.

python bench/step_cache_policies.py [--scenes 4] [--seeds 1] [--policies a,b] [--out FILE]
python bench/step_cache_policies.py --random [--layers 12] [--size 256] [--steps 28] [--out FILE]

The policies are newbie.bench.step_cache_eval.POLICIES (the speed bench's table). Demo: the held-out binding
scenes of newbie.demo.evaluate, same seeds for every policy, binding = newbie.demo.evaluate.score. Random: a
NextDiT of the demo's width with `--layers` joint layers and default-initialised weights, random captions
(cond 24 tokens, uncond 8), Euler with CFG 5 on every step, decoded through the demo model's VAE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

import newbie  # noqa: E402
from newbie.bench.speed_measure import psnr  # noqa: E402
from newbie.bench.step_cache_eval import POLICIES, demo_binding, describe, trajectory_table  # noqa: E402


def random_table(policies: dict, layers: int, size: int, steps: int) -> dict:
    from dataclasses import replace

    from newbie.bench.speed_peers import _trajectory
    from newbie.model.dit import NextDiT
    from newbie.model.step_cache import StepCache
    from newbie.model.text import TextEmbeds
    from newbie.sampling.guidance import split_pair, velocity_fn

    pipe = newbie.load(None, device="cpu")  # the demo model's VAE decodes
    torch.manual_seed(0)
    cfg = replace(pipe.dit.cfg, n_layers=layers)
    dit = NextDiT(cfg).eval()
    g = torch.Generator().manual_seed(1)

    def embeds(n):
        return TextEmbeds(
            torch.randn(1, n, cfg.cap_feat_dim, generator=g),
            torch.ones(1, n, dtype=torch.bool),
            torch.randn(1, cfg.clip_text_dim, generator=g),
        )

    cond, unc = embeds(24), embeds(8)
    x = torch.randn(1, cfg.in_channels, size // 8, size // 8, generator=g)
    grid = (size // 16, size // 16)
    rc = dit.rope(cond.cap_mask.sum(1), 24, *grid)
    ru = dit.rope(unc.cap_mask.sum(1), 8, *grid)

    def run(setting):
        caches = [StepCache.of(setting), StepCache.of(setting)] if setting else [None, None]
        pair = split_pair(velocity_fn(dit, cond, rc, caches[0]), velocity_fn(dit, unc, ru, caches[1]))
        t0 = time.perf_counter()
        z = _trajectory(pair, x, steps)
        return z, time.perf_counter() - t0, [c for c in caches if c]

    def decode(z):
        return pipe.codec.decode(z)[0].float()

    with torch.no_grad():
        table = trajectory_table(run, decode, layers, 2 * steps, policies, psnr)
    return {
        "model": f"random NextDiT, dim {cfg.dim}, {layers} joint layers, {size}x{size}",
        "policies": table,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--random", action="store_true", help="a random-weight DiT's trajectory instead of the demo"
    )
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--scenes", type=int, default=4, help="the first N held-out scenes")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--out")
    args = ap.parse_args()
    chosen = {n: POLICIES[n] for n in args.policies.split(",")}
    torch.set_grad_enabled(False)
    if args.random:
        out = random_table(chosen, args.layers, args.size, args.steps)
    else:
        out = demo_binding(chosen, args.scenes, args.seeds)
    out["settings"] = {n: describe(s) for n, s in chosen.items()}
    out["device"] = "CPU"
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
