"""Step cache policies measured two ways: DiT calls and PSNR on one sampling trajectory (any DiT, e.g. the speed
bench's random full-size one, with the same noise and captions as its uncached run), and hair/background
binding on the demo model's trained trajectory (newbie.demo.evaluate's held-out scenes).

`calls` counts DiT-call equivalents: joint layers run / joint layers (a skipped call still runs the first layer
and the policy's `last` ones); `full_calls` counts the calls that ran every layer.
"""

from __future__ import annotations

import time

import torch

from newbie.model.step_cache import AUTO, StepCache, StepPolicy

# The table of `newbie bench speed` and bench/step_cache_policies.py. "none" runs every call; first_block_T is
# `--step-cache T` (one layer probes, every other layer is skipped on a hit); the others are StepPolicy settings.
POLICIES: dict[str, float | StepPolicy] = {
    "none": 0.0,
    "first_block_0.05": 0.05,
    "first_block_0.1": 0.1,
    "first_block_0.15": 0.15,
    "first_block_0.2": 0.2,
    "last1_0.15": StepPolicy(0.15, last=1),
    "last1_0.2": StepPolicy(0.2, last=1),
    "last2_0.2": StepPolicy(0.2, last=2),
    "taylor1_0.15": StepPolicy(0.15, order=1),
    "taylor1_0.2": StepPolicy(0.2, order=1),
    "last1_taylor1_0.2": StepPolicy(0.2, last=1, order=1),
    "taylor1_cap2_0.15": StepPolicy(0.15, max_skips=2, order=1),
    # DBCache F1B0 + TaylorSeer's own shape: two full warm-up calls per branch, then first order
    "taylor1_warm2_0.15": StepPolicy(0.15, warmup=2, order=1),
    "warmup_cap_0.3": StepPolicy(0.3, warmup=4, max_skips=2),
    "accumulated_0.25": StepPolicy(0.25, accumulate=True),
    "auto": AUTO,
}


def describe(setting: float | StepPolicy) -> str:
    if not isinstance(setting, StepPolicy):
        return f"--step-cache {setting}" if setting else "no cache"
    keys = ("warmup", "max_skips", "accumulate", "last", "order")
    extra = "".join(f", {k}={getattr(setting, k)}" for k in keys if getattr(setting, k))
    return f"StepPolicy({setting.threshold}{extra})"


def call_counts(caches: list[StepCache], n_layers: int) -> dict:
    """DiT-call equivalents and full calls over the given caches (one per branch and request)."""
    calls = sum(c.calls for c in caches)
    hits = sum(c.hits for c in caches)
    layers = sum(c.calls * n_layers - c.hits * (n_layers - 1 - min(c.last, n_layers - 1)) for c in caches)
    return {"calls": round(layers / n_layers, 2), "full_calls": calls - hits, "of_calls": calls}


def trajectory_table(run, decode, n_layers: int, n_calls: int, policies: dict, psnr) -> dict:
    """name -> calls, PSNR against `none` and seconds on one trajectory of n_calls DiT calls.
    run(setting) -> (latent, seconds, caches) samples it with a fresh cache per branch (setting 0: no cache,
    no caches); decode(latent) -> image in [0, 1]."""
    z, secs, _ = run(0.0)
    ref = decode(z)
    table = {
        "none": {
            "calls": float(n_calls),
            "full_calls": n_calls,
            "of_calls": n_calls,
            "psnr_db": None,
            "s": secs,
        }
    }
    for name, setting in policies.items():
        if setting:
            z, secs, caches = run(setting)
            table[name] = {**call_counts(caches, n_layers), "psnr_db": psnr(decode(z), ref), "s": secs}
    return table


def demo_binding(policies: dict, scenes: int = 4, seeds: int = 1, device: str = "cpu", pipe=None) -> dict:
    """name -> calls, PSNR against no cache and binding on the demo model's held-out scenes (20 Euler steps,
    CFG 4, 128x128): the picture-quality side of the table, on a trained model."""
    import numpy as np

    import newbie.pipeline.pipeline as pipeline_module
    from newbie.bench.speed_measure import psnr
    from newbie.demo.evaluate import held_out_scenes, score
    from newbie.demo.world import xml_caption
    from newbie.pipeline.load import load

    pipe = pipe or load(None, device=device)
    chosen = held_out_scenes(1)[:scenes]
    flat = [s for s in chosen for _ in range(seeds)]
    n_layers = len(pipe.dit.layers)
    real = pipeline_module.cfg_model
    table, ref = {}, None
    caches: list[StepCache] = []  # the latest policy's, caught where the pipeline builds its guided model

    def catching(*args, **kwargs):
        model, cs = real(*args, **kwargs)
        caches.extend(c for c in cs if c is not None)
        return model, cs

    for name, setting in {"none": StepPolicy(0.0), **{k: v for k, v in policies.items() if v}}.items():
        caches.clear()
        pipeline_module.cfg_model, pipe.step_cache = catching, setting
        t0 = time.perf_counter()
        try:
            images = []
            for scene in chosen:
                gen = pipe.generate(xml_caption(scene), seed=0, batch=seeds)
                images += [
                    torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) / 255 for im in gen.images
                ]
        finally:
            pipeline_module.cfg_model, pipe.step_cache = real, 0.0
        images = torch.stack(images).float()
        ref = images if ref is None else ref
        binding = score(images, flat)
        table[name] = {
            **call_counts(caches, n_layers),
            "psnr_db": None if name == "none" else psnr(images, ref),
            "hair": binding["hair_accuracy"],
            "background": binding["background_accuracy"],
            "s": round(time.perf_counter() - t0, 1),
        }
    return {
        "images": len(flat),
        "hair_checks": score(ref, flat)["hair_checks"],
        "device": str(pipe.device),
        "policies": table,
    }
