"""Stateless tensor math of the DiT: time embedding, RoPE, attention, norms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from newbie.errors import NewbieError
from newbie.model import flash


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # Computed in fp32 and cast back, as the reference does; the weight is plain (not 1 + w).
    out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return out.to(x.dtype) * weight


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoid of raw t in [0, 1] (no x1000), cos first: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_inv_freqs(axes_dims: tuple[int, ...], theta: float, device=None) -> list[Tensor]:
    # float64 then float32, matching the reference tables.
    return [
        (1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)).float()
        for d in axes_dims
    ]


def rope_angles(pos: Tensor, inv_freqs: list[Tensor]) -> Tensor:
    """Angles for 3-axis positions: pos (B, N, 3) -> (B, N, head_dim/2), axis blocks concatenated."""
    return torch.cat([pos[..., i, None].float() * f for i, f in enumerate(inv_freqs)], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs (x[2k], x[2k+1]) as complex numbers (GPT-J style), in fp32.

    x: (B, N, H, D); cos/sin: (B, N, D/2).
    """
    xf = x.float().unflatten(-1, (-1, 2))  # (B, N, H, D/2, 2)
    x0, x1 = xf.unbind(-1)
    c, s = cos[:, :, None], sin[:, :, None]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
    return out.flatten(-2).to(x.dtype)


BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def backend_order(name: str) -> list[SDPBackend]:
    """The named backend first, then the others (so CPU and unsupported shapes still run); "auto" and our
    own kernels (model/flash.py, which fall back to PyTorch's choice): []."""
    if name == "auto" or name in flash.BACKENDS:
        return []
    if name not in BACKENDS:
        names = ", ".join([*BACKENDS, *flash.BACKENDS])
        raise NewbieError(f"unknown attention backend {name!r}; choose from auto, {names}")
    first = BACKENDS[name]
    return [first] + [b for b in BACKENDS.values() if b != first]


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, backend: str = "auto") -> Tensor:
    """Bidirectional GQA attention. q: (B, N, Hq, D), k/v: (B, N, Hkv, D), key_mask: (B, N) bool or None.

    Returns (B, N, Hq*D). No mask on the hot path: pass None when every key is valid. backend: the SDPA
    kernel tried first on unmasked calls ("auto": PyTorch's own choice, and no sdpa_kernel context in a
    compiled graph, which keeps AOTAutograd's on-disk cache usable).
    """
    if key_mask is None and backend in flash.BACKENDS and flash.supported(q, k):
        return flash.flash96(q, k, v, backend == "triton-fp8")
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D)
    groups = q.shape[1] // k.shape[1]
    order = backend_order(backend) if key_mask is None else []
    if order:
        with sdpa_kernel(order, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=groups > 1)
    elif key_mask is None:
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=groups > 1)
    else:
        if groups > 1:  # masked kernels do not all support GQA; expand kv (head h reads kv head h // groups)
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    return out.transpose(1, 2).flatten(2)
