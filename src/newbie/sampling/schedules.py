"""Noise-level grids. Convention everywhere in sampling: sigma = 1 is pure noise, sigma = 0 is data,
x_sigma = (1 - sigma) * data + sigma * noise."""

from __future__ import annotations

import torch
from torch import Tensor


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """Time shift: sigma' = s*sigma / (1 + (s-1)*sigma). Equal to the official t' = t / (t + s - s*t), t = 1 - sigma."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(steps: int, shift: float) -> Tensor:
    """steps + 1 levels from 1 to 0 (uniform in t, then shifted), float64 so host-side logic is exact."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def img2img_sigmas(steps: int, shift: float, strength: float) -> Tensor:
    """The text-to-image grid restricted to [strength, 0], in `steps` intervals (strength 1: flow_sigmas)."""
    if strength >= 1:
        return flow_sigmas(steps, shift)
    if strength <= 0:
        return torch.zeros(1, dtype=torch.float64)
    start = strength / (shift - (shift - 1) * strength)  # the unshifted sigma whose shifted value is `strength`
    return shift_sigmas(torch.linspace(start, 0.0, steps + 1, dtype=torch.float64), shift)


def resolution_shift(image_tokens: int, base_tokens: int = 256, max_tokens: int = 4096,
                     base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Training-time shift exp(mu) with mu linear in the image token count (spec §4.2); for training only."""
    import math

    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (image_tokens - base_tokens))
