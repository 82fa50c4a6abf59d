"""The request values that can be judged without a model: one rule and one message each, used by
`Pipeline.request` (after the model's defaults are filled in) and by `newbie generate` before any weights load
(on the values given on the command line)."""

from __future__ import annotations

import math

from newbie.errors import NewbieError

NOISES = ("newbie", "comfy")  # initial noise: per-image generators, or ComfyUI's one draw for the batch


def check_values(
    *,
    batch=None,
    width=None,
    height=None,
    steps=None,
    sampler=None,
    cfg=None,
    seed=None,
    noise=None,
    schedule=None,
) -> None:
    """Raise a one-line NewbieError for the first value out of its range; None: not given, not checked."""
    from newbie.sampling.samplers import SAMPLERS
    from newbie.sampling.schedules import SCHEDULES

    if batch is not None and batch < 1:
        raise NewbieError(f"batch must be >= 1, got {batch}")
    for side, name in ((width, "width"), (height, "height")):
        if side is not None and (side % 16 or side < 16):
            raise NewbieError(f"{name} {side} is not a positive multiple of 16")
    if steps is not None and steps < 1:
        raise NewbieError(f"steps must be >= 1, got {steps}")
    if sampler is not None and sampler not in SAMPLERS:
        raise NewbieError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
    if cfg is not None and (not math.isfinite(cfg) or cfg < 0):
        raise NewbieError(f"cfg must be a finite number >= 0, got {cfg}")
    if seed is not None and not 0 <= int(seed) < 2**63:
        raise NewbieError(f"seed must be between 0 and 2^63-1, got {seed}")
    if noise is not None and noise not in NOISES:
        raise NewbieError(f"unknown noise '{noise}' (choose from {', '.join(NOISES)})")
    if schedule is not None and schedule not in SCHEDULES:
        raise NewbieError(f"unknown schedule '{schedule}' (choose from {', '.join(SCHEDULES)})")
