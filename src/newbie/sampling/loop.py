"""The sampling loop over pure tensors: text-to-image, img2img and inpainting are one call.

img2img at strength s: the input's latent is noised to sigma = s, x = (1 - s)·latent + s·noise, and the ODE is
solved from s to 0 on the text-to-image schedule restricted to [s, 0] (schedules.img2img_sigmas). s = 1 is
exactly text-to-image; s = 0 runs no step and returns the input's latent.
Inpainting: at every model call the kept area (mask 0) is put on its exact noising path and its velocity is
replaced by the path's own (noise - latent), so every sampler (multistep ones included) keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from newbie.sampling.samplers import Callback, ModelFn


@dataclass
class Start:
    """Where an img2img/inpainting run starts: the input's latent, and which latent pixels are repainted."""

    latent: Tensor  # (B, C, h, w) or broadcastable to the noise
    mask: Tensor | None = None  # (1, 1, h, w) at latent resolution, 1 = repaint, 0 = keep exactly


def keep_unmasked(model: ModelFn, mask: Tensor, latent: Tensor, noise: Tensor) -> ModelFn:
    """model(x, sigma) whose kept area (mask 0) follows x = (1 - sigma)·latent + sigma·noise exactly."""
    path_velocity = noise - latent  # d/dsigma of that path

    def masked(x: Tensor, sigma: float) -> Tensor:
        on_path = (1 - sigma) * latent + sigma * noise
        v = model(mask * x + (1 - mask) * on_path, sigma)
        return mask * v + (1 - mask) * path_velocity

    return masked


def sample(
    sampler: Callable,
    model: ModelFn,
    noise: Tensor,
    sigmas: Tensor,
    start: Start | None = None,
    callback: Callback = None,
) -> Tensor:
    """Solve from sigmas[0] to sigmas[-1] with `sampler`. Without `start`: from pure noise (text-to-image);
    with it: from the input latent noised to sigmas[0] (img2img), keeping its unmasked part (inpainting)."""
    if start is None:
        return sampler(model, noise, sigmas, callback=callback)
    latent = start.latent.to(noise.device, noise.dtype).expand_as(noise)
    s0 = float(sigmas[0])
    x = (1 - s0) * latent + s0 * noise
    mask = None if start.mask is None else start.mask.to(noise.device, noise.dtype)
    if mask is not None:
        model = keep_unmasked(model, mask, latent, noise)
    x = sampler(model, x, sigmas, callback=callback)
    return x if mask is None else mask * x + (1 - mask) * latent
