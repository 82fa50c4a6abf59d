"""Live preview without the VAE: a fixed linear map from the 16 latent channels to RGB (+ bias).

The map is fitted once per model by least squares between latents and what the model's own VAE decodes
them to, average-pooled to latent resolution. A linear map cannot draw detail, but it shows colours and
composition of the sampler's current x0 estimate (the callback's `denoised`) for a few microseconds a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from newbie.model.vae import LatentCodec


@dataclass(frozen=True)
class Projection:
    weight: torch.Tensor  # (C, 3)
    bias: torch.Tensor  # (3,)

    def rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """(C, h, w) latent -> (3, h, w) colours in [0, 1]."""
        x = latent.detach().float().cpu()
        out = torch.einsum("chw,cd->dhw", x, self.weight) + self.bias[:, None, None]
        return out.clamp(0, 1)

    def image(self, latent: torch.Tensor, scale: int = 1):
        """A PIL image of the first latent of a batch (or of a single (C, h, w) latent), upscaled by `scale`."""
        from PIL import Image

        if latent.dim() == 4:
            latent = latent[0]
        arr = (self.rgb(latent) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        img = Image.fromarray(np.ascontiguousarray(arr))
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)
        return img


def probe_latents(channels: int, side: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Latents to decode for the fit: half smooth fields (like the blurry x0 of early steps), half white noise,
    all at the unit scale the model's latent space has after the VAE's scale/shift."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples - samples // 2, channels, side, side, generator=g)
    coarse = torch.randn(samples // 2, channels, max(side // 8, 1), max(side // 8, 1), generator=g)
    smooth = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    smooth = smooth / smooth.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return torch.cat([smooth, noise])


@torch.no_grad()
def fit_projection(codec: LatentCodec, side: int = 32, samples: int = 4, seed: int = 0) -> Projection:
    """Decode a few probe latents with the real VAE and solve colours ~ latent @ W + b."""
    device = next(codec.vae.parameters()).device
    z = probe_latents(codec.cfg.latent_channels, side, samples, seed)
    images = torch.cat([codec.decode(z[i : i + 1].to(device)).float().cpu() for i in range(samples)])
    pooled = F.avg_pool2d(images, codec.cfg.downscale)  # (B, 3, side, side): one colour per latent pixel
    x = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    y = pooled.permute(0, 2, 3, 1).reshape(-1, 3).double()
    x1 = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(x1, y).solution  # (C + 1, 3)
    return Projection(weight=solution[:-1].float(), bias=solution[-1].float())
