"""Latent <-> image for the FLUX VAE, with its scale and shift (spec §4.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from newbie.config import VAEConfig


class LatentCodec:
    def __init__(self, vae, cfg: VAEConfig):
        self.vae, self.cfg = vae, cfg

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """Model latent (B, 16, h, w) -> image (B, 3, 8h, 8w) in [0, 1], float32. One image at a time: the
        decoder's full-resolution activations (about 5 GiB at 1024^2 in fp32) would grow with the batch and
        break a memory plan's budget, and batching buys almost no speed here."""
        z = latent.to(self.dtype) / self.cfg.scaling_factor + self.cfg.shift_factor
        image = torch.cat([self.vae.decode(one).float() for one in z.split(1)])
        return ((image + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode(self, image: Tensor) -> Tensor:
        """Image (B, 3, H, W) in [0, 1] -> model latent, using the posterior mode as in training (one image
        at a time, for the same reason as decode)."""
        x = image.to(self.dtype) * 2 - 1
        z = torch.cat([self.vae.encode(one) for one in x.split(1)])
        return ((z - self.cfg.shift_factor) * self.cfg.scaling_factor).float()
