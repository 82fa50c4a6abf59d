"""The official training objective (spec §4.1/§4.2): rectified flow with t = 0 noise and t = 1 data,
x_t = t x1 + (1 - t) x0, the model predicting v = x1 - x0; t drawn logit-normal and shifted towards noise by
the resolution shift exp(mu) of the image token count; caption dropout as the official trainer does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from newbie.sampling.schedules import resolution_shift

GEMMA_DROP = 0.10  # Gemma reads an empty caption while Jina still reads the caption
BOTH_DROP = 0.05  # both blank: the unconditional branch that CFG uses at inference


@dataclass
class Batch:
    x1: Tensor  # (B, 16, h, w) latents, FLUX shift and scale applied
    cap: Tensor  # (B, L, cap_feat_dim) Gemma features, right-padded
    mask: Tensor  # (B, L) bool
    pooled: Tensor  # (B, clip_dim) Jina pooled feature


@dataclass
class Blank:
    """The empty caption's encodings, for caption dropout."""

    cap: Tensor  # (L0, cap_feat_dim)
    pooled: Tensor  # (clip_dim,)


def sample_t(b: int, image_tokens: int, gen: torch.Generator) -> Tensor:
    """(B,) training times: logit-normal, then the resolution shift applied to sigma = 1 - t."""
    t = torch.sigmoid(torch.randn(b, generator=gen))
    s = resolution_shift(image_tokens)
    sigma = 1 - t
    sigma = s * sigma / (1 + (s - 1) * sigma)
    return 1 - sigma


def drop_captions(batch: Batch, blank: Blank, gen: torch.Generator) -> Batch:
    r = torch.rand(batch.x1.shape[0], generator=gen)
    gemma, both = r < GEMMA_DROP + BOTH_DROP, r < BOTH_DROP
    if not bool(gemma.any()):
        return batch
    n0 = blank.cap.shape[0]
    width = max(batch.cap.shape[1], n0)
    cap = F.pad(batch.cap, (0, 0, 0, width - batch.cap.shape[1])).clone()
    mask = F.pad(batch.mask, (0, width - batch.mask.shape[1]), value=False).clone()
    pooled = batch.pooled.clone()
    cap[gemma] = 0
    cap[gemma, :n0] = blank.cap.to(cap.dtype)
    mask[gemma] = False
    mask[gemma, :n0] = True
    pooled[both] = blank.pooled.to(pooled.dtype)
    n = int(mask.sum(1).max())
    return Batch(batch.x1, cap[:, :n], mask[:, :n], pooled)


def flow_loss(dit, batch: Batch, blank: Blank, gen: torch.Generator, device, dtype) -> Tensor:
    """One step's loss. All randomness comes from `gen` (a CPU generator), so a resumed run draws the same
    numbers as an uninterrupted one on any device."""
    b = batch.x1.shape[0]
    p = dit.cfg.patch_size
    tokens = (batch.x1.shape[2] // p) * (batch.x1.shape[3] // p)
    t = sample_t(b, tokens, gen)
    batch = drop_captions(batch, blank, gen)
    x0 = torch.randn(batch.x1.shape, generator=gen)
    x1 = batch.x1.float()
    tt = t[:, None, None, None]
    xt = tt * x1 + (1 - tt) * x0
    target = (x1 - x0).to(device)
    mask = batch.mask.to(device)
    v = dit(
        xt.to(device, dtype),
        t.to(device, dtype),
        batch.cap.to(device, dtype),
        None if bool(mask.all()) else mask,
        batch.pooled.to(device, dtype),
    )
    return F.mse_loss(v.float(), target)
