"""Step cache policies on the demo model's trained trajectory: DiT calls, PSNR against no cache, binding.

python bench/step_cache_policies.py [--seeds 2] [--scenes N] [--policies a,b] [--device cpu] [--out FILE]

Each policy generates the held-out binding scenes of newbie.demo.evaluate with the same seeds; the full
DiT calls are counted from the step caches (first layer always runs; a hit skips the rest), the PSNR is
against the uncached images, the binding scores are newbie.demo.evaluate.score's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import newbie  # noqa: E402
import newbie.pipeline.pipeline as pipeline_module  # noqa: E402
from newbie.demo.evaluate import held_out_scenes, score  # noqa: E402
from newbie.demo.world import xml_caption  # noqa: E402
from newbie.model.step_cache import AUTO, StepPolicy  # noqa: E402

POLICIES = {
    "off": StepPolicy(0.0),  # never skips: counts the calls, same images as no cache
    "first_block_0.05": 0.05,
    "first_block_0.15": 0.15,
    "first_block_0.3": 0.3,
    "warmup_cap_0.15": StepPolicy(0.15, warmup=4, max_skips=2),
    "warmup_cap_0.3": StepPolicy(0.3, warmup=4, max_skips=2),
    "accumulated_0.3": StepPolicy(0.3, warmup=4, max_skips=2, accumulate=True),
    "accumulated_0.5": StepPolicy(0.5, warmup=4, max_skips=3, accumulate=True),
    "warmup_0.15": StepPolicy(0.15, warmup=2),
    "accumulated_0.25": StepPolicy(0.25, accumulate=True),
    "auto": AUTO,
}


def run(pipe, setting, scenes, seeds: int) -> tuple[torch.Tensor, int, int]:
    """Images (N,3,H,W in [0,1]) and the (first-layer calls, full calls) over all branches."""
    caches = []
    real = pipeline_module.cfg_model

    def catching(*args, **kwargs):
        model, cs = real(*args, **kwargs)
        caches.extend(c for c in cs if c is not None)
        return model, cs

    pipeline_module.cfg_model = catching
    pipe.step_cache = setting
    try:
        images = []
        for scene in scenes:
            gen = pipe.generate(xml_caption(scene), seed=0, batch=seeds)
            images += [
                torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 for im in gen.images
            ]
    finally:
        pipeline_module.cfg_model, pipe.step_cache = real, 0.0
    calls = sum(c.calls for c in caches)
    return torch.stack(images), calls, calls - sum(c.hits for c in caches)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--per-triple", type=int, default=1)
    ap.add_argument("--scenes", type=int, default=0, help="only the first N held-out scenes (0 = all)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--out")
    args = ap.parse_args()
    pipe = newbie.load(args.model, device=args.device)
    scenes = held_out_scenes(args.per_triple)[: args.scenes or None]
    flat = [s for s in scenes for _ in range(args.seeds)]
    ref = None
    table = {}
    for name in ["off"] + [n for n in args.policies.split(",") if n != "off"]:
        t = time.perf_counter()
        images, probes, full = run(pipe, POLICIES[name], scenes, args.seeds)
        ref = images if ref is None else ref
        binding = score(images, flat)
        entry = {
            "dit_calls": full,
            "first_layer_calls": probes,
            "psnr_db": psnr(images, ref),
            "hair_accuracy": binding["hair_accuracy"],
            "background_accuracy": binding["background_accuracy"],
            "seconds": round(time.perf_counter() - t, 1),
        }
        table[name] = entry
        print(name, json.dumps(entry), file=sys.stderr, flush=True)
    out = {
        "device": "2-core CPU, demo model",
        "images": len(flat),
        "hair_checks": score(ref, flat)["hair_checks"],
        "step_cache_policies": table,
    }
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
