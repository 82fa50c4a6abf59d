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
    start = strength / (
        shift - (shift - 1) * strength
    )  # the unshifted sigma whose shifted value is `strength`
    return shift_sigmas(torch.linspace(start, 0.0, steps + 1, dtype=torch.float64), shift)


# uniform: flow_sigmas; simple: ComfyUI's `simple` scheduler (simple_sigmas)
SCHEDULES = ("uniform", "simple")


def comfy_sigma_table(shift: float, multiplier: float = 1.0, timesteps: int = 1000) -> Tensor:
    """The ascending table ComfyUI's ModelSamplingDiscreteFlow builds: sigma(k / timesteps), k = 1..timesteps,
    through the same shift. float32 like ComfyUI's buffer, in the same operation order, so the picked values
    match bit for bit. multiplier: 1.0 for ModelSamplingAuraFlow (the NewBie template), 1000 for
    ModelSamplingSD3."""
    t = (torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier / multiplier
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def simple_sigmas(steps: int, shift: float, multiplier: float = 1.0) -> Tensor:
    """ComfyUI's `simple` scheduler over that table: entry -(1 + floor(i * 1000 / steps)) for i < steps,
    then 0. It differs from flow_sigmas in float32 rounding and, when 1000 is not a multiple of steps, by the
    floor (18 steps: the second level is t = 0.945 here, 1 - 1/18 = 0.9444 in flow_sigmas)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    table = comfy_sigma_table(shift, multiplier)
    stride = len(table) / steps
    picked = [float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]
    return torch.tensor(picked, dtype=torch.float32).to(torch.float64)  # ComfyUI returns a FloatTensor


def simple_img2img_sigmas(steps: int, shift: float, strength: float) -> Tensor:
    """ComfyUI's KSampler with denoise < 1: the last steps + 1 levels of a `simple` grid of
    int(steps / denoise) steps."""
    if strength >= 1:
        return simple_sigmas(steps, shift)
    if strength <= 0:
        return torch.zeros(1, dtype=torch.float64)
    return simple_sigmas(int(steps / strength), shift)[-(steps + 1) :]


def schedule_sigmas(schedule: str, steps: int, shift: float, strength: float = 1.0) -> Tensor:
    """The sigma grid of a named schedule (SCHEDULES), text-to-image (strength 1) or img2img."""
    if schedule == "simple":
        return simple_img2img_sigmas(steps, shift, strength)
    if schedule == "uniform":
        return img2img_sigmas(steps, shift, strength)
    raise ValueError(f"unknown schedule '{schedule}' (choose from {', '.join(SCHEDULES)})")


def resolution_shift(
    image_tokens: int,
    base_tokens: int = 256,
    max_tokens: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Training-time shift exp(mu) with mu linear in the image token count (spec §4.2); for training only."""
    import math

    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (image_tokens - base_tokens))
