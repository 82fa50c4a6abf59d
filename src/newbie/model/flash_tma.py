# ruff: noqa: E741  (Q, K, V, O: the names of the attention operands)
"""The bf16 attention kernel of model/flash_triton.py with its tiles read through Hopper's tensor-memory
accelerator (TMA): host-side tensor descriptors, one per operand and part width (64 and 32), instead of
pointer arithmetic. Same algorithm, same softmax step (`flash_triton._softmax_step`).

Each descriptor spans (B, N, H*96) (one image: (N, H*96)) with the tensor's own (image, row) strides: a box
that runs past an image's last row reads zeros, never the next image's rows, so the last, partial key block
needs only its scores masked (a zero key would score 0, not be absent). TMA needs a 16-byte-aligned base and
strides and packed heads (`flash_variant.tma_aligned`); the caller takes the pointer kernel otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from newbie.model.flash_triton import _LOG2E, _fresh_state, _program, _softmax_step, _store_o
from newbie.model.flash_variant import tma_aligned, tma_strides

_DESCRIPTORS = ("desc_q0", "desc_q1", "desc_k0", "desc_k1", "desc_v0", "desc_v1")


def set_blocks(descs: dict, block_m: int, block_n: int) -> None:
    """Each descriptor's box: (one image,) BLOCK_M query rows or BLOCK_N key rows, 64 or 32 channels."""
    for name in _DESCRIPTORS:
        rows = block_m if name.startswith("desc_q") else block_n
        box = [rows, 64 if name.endswith("0") else 32]
        descs[name].block_shape = box if len(descs[name].shape) == 2 else [1, *box]


def _pre_hook(nargs: dict) -> None:
    set_blocks(nargs, nargs["BLOCK_M"], nargs["BLOCK_N"])


_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s, pre_hook=_pre_hook)
    for m in (64, 128)
    for n in (64, 128)
    for s in (2, 3, 4)
    for w in (4, 8)
    # 8 warps on a tile below 128x128 leave each warp too little to do (the tutorial's rule); 64x64 tiles
    # only with 3 or 4 stages, which keeps the space at 14 configs
    if not (w == 8 and m * n < 128 * 128) and not (m == n == 64 and s == 2)
]


def descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_m: int = 64, block_n: int = 64):
    """The six descriptors (q, k, v; 64- and 32-wide parts) over (B, N, H*96) views of the tensors' memory,
    in the kernel's argument order (the autotuner's pre-hook resets their boxes per config). One image:
    (N, H*96), the same rows without the unit dimension (the kernel's FLAT), a plain 2-D load into the dot."""
    out = {}
    for name, t in zip(("q", "k", "v"), (q, k, v)):
        B, N, H, D = t.shape
        (sb, sn), flat = tma_strides(t), B == 1
        shape, strides = ([N, H * D], [sn, 1]) if flat else ([B, N, H * D], [sb, sn, 1])
        for part in "01":
            out[f"desc_{name}{part}"] = TensorDescriptor(t, shape, strides, [8, 32] if flat else [1, 8, 32])
    set_blocks(out, block_m, block_n)
    return [out[name] for name in _DESCRIPTORS]


@triton.jit
def _load(desc, b, row, col, ROWS: tl.constexpr, WIDTH: tl.constexpr, FLAT: tl.constexpr):
    """The (ROWS, WIDTH) box at (image b,) row, col."""
    if FLAT:
        return desc.load([row, col])
    else:
        return desc.load([b, row, col]).reshape([ROWS, WIDTH])


@triton.jit
def _tma_tile(
    q0, q1, acc0, acc1, m_i, l_i, desc_k0, desc_k1, desc_v0, desc_v1, b, col, start, n_kv, qk_scale, offs_n,
    BLOCK_N: tl.constexpr, FLAT: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    k0 = _load(desc_k0, b, start, col, BLOCK_N, 64, FLAT)
    k1 = _load(desc_k1, b, start, col + 64, BLOCK_N, 32, FLAT)
    v0 = _load(desc_v0, b, start, col, BLOCK_N, 64, FLAT)
    v1 = _load(desc_v1, b, start, col + 64, BLOCK_N, 32, FLAT)
    valid = (start + offs_n) < n_kv
    return _softmax_step(q0, q1, k0.T, k1.T, v0, v1, acc0, acc1, m_i, l_i, qk_scale, valid, MASKED)


@triton.autotune(configs=_CONFIGS, key=["n_q", "n_kv", "H", "GROUPS", "FLAT"])
@triton.jit
def _attention_bf16_tma(
    desc_q0,
    desc_q1,
    desc_k0,
    desc_k1,
    desc_v0,
    desc_v1,
    O,
    qk_scale,
    n_q,
    n_kv,
    n_full,
    stride_ob,
    stride_on,
    stride_oh,
    H: tl.constexpr,
    GROUPS: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m, bh, b, h, hk, offs_m = _program(H, GROUPS, BLOCK_M)
    q0 = _load(desc_q0, b, pid_m * BLOCK_M, h * 96, BLOCK_M, 64, FLAT)  # rows past n_q: zeros
    q1 = _load(desc_q1, b, pid_m * BLOCK_M, h * 96 + 64, BLOCK_M, 32, FLAT)
    offs_n = tl.arange(0, BLOCK_N)
    col = hk * 96
    m_i, l_i, acc0, acc1 = _fresh_state(BLOCK_M)
    # the full key blocks unmasked, then the last keys (n_full: a multiple of 128, so of BLOCK_N) masked
    for last in tl.static_range(2):
        for start in tl.range(n_full if last else 0, n_kv if last else n_full, BLOCK_N):
            acc0, acc1, m_i, l_i = _tma_tile(
                q0, q1, acc0, acc1, m_i, l_i, desc_k0, desc_k1, desc_v0, desc_v1, b, col, start, n_kv,
                qk_scale, offs_n, BLOCK_N, FLAT, last == 1,
            )  # fmt: skip
    _store_o(O, acc0 / l_i[:, None], acc1 / l_i[:, None], b, h, offs_m, n_q, stride_ob, stride_on, stride_oh)


def attention_bf16_tma(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, N, Hq, 96), k/v (B, M, Hkv, 96), TMA-aligned (`flash_variant.tma_aligned`) -> (B, N, Hq*96)."""
    B, n_q, H, D = q.shape
    n_kv, Hk = k.shape[1], k.shape[2]
    assert D == 96 and H % Hk == 0 and tma_aligned(q, k, v)
    o = torch.empty(B, n_q, H, D, device=q.device, dtype=q.dtype)

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)

    _attention_bf16_tma[grid](
        *descriptors(q, k, v), o, D**-0.5 * _LOG2E, n_q, n_kv, n_kv - n_kv % 128,
        o.stride(0), o.stride(1), o.stride(2), H=H, GROUPS=H // Hk, FLAT=B == 1,
    )  # fmt: skip
    return o.flatten(2)
