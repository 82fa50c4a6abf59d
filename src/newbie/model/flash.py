"""Our own attention kernels for the DiT's head size (96): the backends "triton" (bf16/fp16) and
"triton-fp8" (e4m3 Q, K, V and P with per-block scales).

The kernels themselves are Triton (model/flash_triton.py; the bf16 kernel's TMA variant model/flash_tma.py,
chosen per shape by model/flash_variant.py; CUDA only). This module holds what the CPU can check: the
kernels' algorithm written in torch, tile for tile (`blockwise_reference`: split 96 = 64 + 32, online softmax
in base 2), the fp8 quantization they read (`quantize_fp8`), the bf16 kernel's entry (`attention_bf16`), and
the custom ops that let a compiled block call them as one opaque node.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import torch
from torch import Tensor

from newbie.model import flash_variant

LOG2E = 1.4426950408889634
FP8_BLOCK = 128  # rows of Q (and keys of K) that share one fp8 scale
E4M3_MAX = 448.0
BACKENDS = ("triton", "triton-fp8")


def blockwise_reference(q: Tensor, k: Tensor, v: Tensor, block_n: int = 128) -> Tensor:
    """The kernels' math in torch: q (B, N, Hq, D), k/v (B, M, Hkv, D) -> (B, N, Hq*D), fp32 accumulation,
    keys visited in blocks of `block_n` with the running max / sum rescaled as each block arrives."""
    B, N, H, D = q.shape
    groups = H // k.shape[2]
    qf = q.float().transpose(1, 2)  # (B, H, N, D)
    kf = k.float().transpose(1, 2).repeat_interleave(groups, 1)
    vf = v.float().transpose(1, 2).repeat_interleave(groups, 1)
    split = (64, D - 64) if D > 64 else (D,)
    q_parts = qf.split(split, -1)
    scale = D**-0.5 * LOG2E
    m = torch.full((B, H, N), -math.inf)
    l_sum = torch.zeros(B, H, N)
    accs = [torch.zeros(B, H, N, w) for w in split]
    for start in range(0, kf.shape[2], block_n):
        kb, vb = kf[:, :, start : start + block_n], vf[:, :, start : start + block_n]
        s = sum(qp @ kp.transpose(-1, -2) for qp, kp in zip(q_parts, kb.split(split, -1))) * scale
        m_new = torch.maximum(m, s.amax(-1))
        p = torch.exp2(s - m_new[..., None])
        alpha = torch.exp2(m - m_new)
        l_sum = l_sum * alpha + p.sum(-1)
        p = p.to(v.dtype).float()  # the kernel feeds P to the second product in V's dtype
        accs = [a * alpha[..., None] + p @ vp for a, vp in zip(accs, vb.split(split, -1))]
        m = m_new
    out = torch.cat(accs, -1) / l_sum[..., None]
    return out.to(q.dtype).transpose(1, 2).flatten(2)


def _block_amax(x: Tensor, block: int) -> Tensor:
    """x (B, N, H, D) -> (B*H, ceil(N/block)) absolute max over each block of rows of each head."""
    B, N, H, _ = x.shape
    nb = -(-N // block)
    a = x.abs().amax(-1).float()  # (B, N, H)
    a = torch.nn.functional.pad(a, (0, 0, 0, nb * block - N))
    return a.unflatten(1, (nb, block)).amax(2).permute(0, 2, 1).reshape(B * H, nb)


def _row_scales(scales: Tensor, batch: int, heads: int, n: int) -> Tensor:
    """Per-block scales (batch*heads, blocks) -> each row's scale, (batch, n, heads, 1)."""
    per_head = scales.view(batch, heads, -1).repeat_interleave(FP8_BLOCK, 2)[:, :, :n]
    return per_head.permute(0, 2, 1)[..., None]


def quantize_fp8(q: Tensor, k: Tensor, v: Tensor):
    """(q8, q_scales, k8, k_scales, vt8, v_scales): Q and K in e4m3 with one scale per 128 rows of each head,
    V transposed to (B, Hkv, D, M rounded up to 16) in e4m3 with one scale per channel of each KV head.
    A value is its e4m3 code times its scale."""
    fp8 = torch.float8_e4m3fn
    # QK^T is the same for every key shifted by one vector (a constant per query row, which softmax drops), so
    # K loses its mean over the keys first: a smaller range for its e4m3 codes (SageAttention's smoothing)
    k = k.float() - k.float().mean(1, keepdim=True)
    B, N, H, D = q.shape
    M, Hk = k.shape[1], k.shape[2]
    # contiguous: the kernel indexes the scales as rows of (B*H, blocks); the amax below is a permuted view
    qs = (_block_amax(q, FP8_BLOCK) / E4M3_MAX).clamp(min=1e-12).contiguous()
    ks = (_block_amax(k, FP8_BLOCK) / E4M3_MAX).clamp(min=1e-12).contiguous()

    vs = (v.abs().amax(1).float() / E4M3_MAX).clamp(min=1e-12)  # (B, Hk, D)
    m16 = -(-M // 16) * 16
    vt = (v.float() / vs[:, None]).permute(0, 2, 3, 1)  # (B, Hk, D, M)
    vt8 = torch.nn.functional.pad(vt, (0, m16 - M)).to(fp8).contiguous()
    q8 = (q.float() / _row_scales(qs, B, H, N)).to(fp8)
    k8 = (k / _row_scales(ks, B, Hk, M)).to(fp8)
    return q8, qs, k8, ks, vt8, vs.reshape(B * Hk, D).contiguous()


def fp8_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """What the fp8 kernel computes, in torch: the quantized Q, K, V dequantized, P rounded to e4m3."""
    B, N, H, D = q.shape
    M, Hk = k.shape[1], k.shape[2]
    q8, qs, k8, ks, vt8, vs = quantize_fp8(q, k, v)

    qd, kd = q8.float() * _row_scales(qs, B, H, N), k8.float() * _row_scales(ks, B, Hk, M)
    groups = H // Hk
    s = (qd.transpose(1, 2) @ kd.transpose(1, 2).repeat_interleave(groups, 1).transpose(-1, -2)) * D**-0.5
    # the kernel rounds the unnormalised weights (max 1) x256 to e4m3 and divides by the sum of the rounded
    # ones; its running max makes its rounding differ slightly from this global-max form
    e = torch.exp(s - s.amax(-1, keepdim=True))
    e8 = (e * 256).to(torch.float8_e4m3fn).float()
    p = e8 / e8.sum(-1, keepdim=True)
    vdt = (vt8[..., :M].float()).permute(0, 1, 3, 2).repeat_interleave(groups, 1)  # codes (B, H, M, D)
    out = (p @ vdt) * vs.view(B, Hk, D).repeat_interleave(groups, 1)[:, :, None]
    return out.to(q.dtype).transpose(1, 2).flatten(2)


def supported(q: Tensor, k: Tensor) -> bool:
    """Whether the Triton kernels take these inputs (else the caller falls back to SDPA)."""
    return (
        q.is_cuda
        and q.shape[-1] == 96
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.shape[2] % k.shape[2] == 0
        and _triton_available()
    )


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _tma_possible(device: torch.device) -> bool:
    """Whether this Triton has host tensor descriptors and this GPU TMA (sm90, Hopper, or later)."""
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def attention_bf16(q: Tensor, k: Tensor, v: Tensor, variant: str = "auto") -> Tensor:
    """The bf16/fp16 kernel: q (B, N, Hq, 96), k/v (B, M, Hkv, 96), last dim contiguous -> (B, N, Hq*96).
    variant: "pointer", "tma" or "auto" (the faster of the two, timed on the first call of each shape);
    "pointer" wherever TMA cannot run. `flash_variant.ran(q, k)` says which one did."""
    from newbie.model import flash_triton

    runs = {"pointer": lambda: flash_triton.attention_bf16_pointer(q, k, v)}
    possible = _tma_possible(q.device) and flash_variant.tma_aligned(q, k, v)
    if possible:
        from newbie.model import flash_tma

        runs["tma"] = lambda: flash_tma.attention_bf16_tma(q, k, v)
    return runs[flash_variant.select(variant, flash_variant.shape_key(q, k), possible, runs)]()


def flash96(q: Tensor, k: Tensor, v: Tensor, fp8: bool) -> Tensor:
    """Our kernels on (B, N, H, 96) inputs -> (B, N, Hq*96). fp8: the quantization is torch code in front
    of the kernel's op, so inside a compiled block inductor fuses it into a few kernels of its own (it was
    the bulk of the fp8 call's time at 4,352 tokens as separate eager kernels); the kernels themselves
    are opaque custom ops."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if fp8:
        return _flash96_fp8(q, *quantize_fp8(q, k, v))
    return _flash96_bf16(q, k, v)


@torch.library.custom_op("newbie::flash96", mutates_args=())
def _flash96_bf16(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return attention_bf16(q, k, v)


@_flash96_bf16.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])


@torch.library.custom_op("newbie::flash96_fp8", mutates_args=())
def _flash96_fp8(
    q: Tensor, q8: Tensor, qs: Tensor, k8: Tensor, ks: Tensor, vt8: Tensor, vs: Tensor
) -> Tensor:
    from newbie.model import flash_triton

    return flash_triton.fp8_from_quantized(q, q8, qs, k8, ks, vt8, vs, block=FP8_BLOCK)


@_flash96_fp8.register_fake
def _(q: Tensor, q8: Tensor, qs: Tensor, k8: Tensor, ks: Tensor, vt8: Tensor, vs: Tensor) -> Tensor:
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])
