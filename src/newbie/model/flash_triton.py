# ruff: noqa: E741  (Q, K, V, O: the names of the attention operands)
"""Triton kernels for the DiT's attention: bidirectional GQA, head size 96, no mask, bf16 or fp8 (e4m3).

Triton tiles need power-of-two widths, and padding 96 to 128 would waste a quarter of both matrix products,
so each head is split into a 64-wide and a 32-wide part: QK^T = Q0 K0^T + Q1 K1^T, and the output keeps two
accumulators (P V0, P V1). Online softmax in base 2 with the 1/sqrt(d) scale folded into one FMA. The
math, block for block, is `flash.blockwise_reference` (tested on the CPU); this file needs a CUDA GPU. The
bf16 softmax step (`_softmax_step`) takes loaded tiles: the TMA variant (model/flash_tma.py) shares it.

fp8: Q and K in e4m3 with one scale per 128-row block (per head), V in e4m3 with one scale per channel (it
factors out of P V, so it is applied to the output), P rounded to e4m3 scaled x256. V is stored transposed
(B, Hkv, D, N), the operand order Hopper's fp8 matrix instructions read. QK^T runs as an e4m3 product; P V
runs in fp16 on the same values (every e4m3 number is exact in fp16), because fed to an e4m3 product from
registers, P broke on the GPU: Triton 3.6 on an H100 gave NaN in the first 8 rows of every 16 in every config,
their row sums already broken, while the fp16 form is finite and within 0.025 of the fp8 math in torch
(bench/fp8_debug.py, bench/results/fp8-debug-h100-2026-12-07-night.json). `PV_FP16=False` keeps the e4m3
product to test again on a newer Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
    for m, n, w, s in (
        (128, 128, 8, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 64, 4, 3),
        (64, 128, 4, 3),
        (128, 128, 4, 3),
        (64, 64, 4, 4),
    )
]


_LOG2E = 1.4426950408889634  # the kernels exponentiate in base 2


@triton.jit
def _program(H, GROUPS, BLOCK_M: tl.constexpr):
    """This program's query block and head: (pid_m, b * H + h, b, h, its KV head, the query rows)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    return pid_m, bh, b, h, h // GROUPS, pid_m * BLOCK_M + tl.arange(0, BLOCK_M)


@triton.jit
def _fresh_state(BLOCK_M: tl.constexpr):
    """Online softmax's start for a query block: running max -inf, running sum 0, both accumulators 0."""
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    return m_i, l_i, tl.zeros([BLOCK_M, 64], tl.float32), tl.zeros([BLOCK_M, 32], tl.float32)


@triton.jit
def _load_q(Q, b, h, offs_m, n_q, stride_qb, stride_qn, stride_qh):
    """The query block's two parts (BLOCK_M, 64) and (BLOCK_M, 32); rows past n_q read as zeros."""
    row_ok = offs_m[:, None] < n_q
    base = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn
    q0 = tl.load(base + tl.arange(0, 64)[None, :], mask=row_ok, other=0.0)
    q1 = tl.load(base + 64 + tl.arange(0, 32)[None, :], mask=row_ok, other=0.0)
    return q0, q1


@triton.jit
def _store_o(O, out0, out1, b, h, offs_m, n_q, stride_ob, stride_on, stride_oh):
    row_ok = offs_m[:, None] < n_q
    base = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on
    tl.store(base + tl.arange(0, 64)[None, :], out0.to(O.dtype.element_ty), mask=row_ok)
    tl.store(base + 64 + tl.arange(0, 32)[None, :], out1.to(O.dtype.element_ty), mask=row_ok)


@triton.jit
def _softmax_step(q0, q1, kt0, kt1, v0, v1, acc0, acc1, m_i, l_i, qk_scale, valid, MASKED: tl.constexpr):
    """One key block into the running softmax: the tiles come loaded (K transposed, (64, BLOCK_N) and
    (32, BLOCK_N); V (BLOCK_N, 64) and (BLOCK_N, 32)), so the pointer and TMA kernels share this math.
    MASKED: `valid` marks the keys that exist (the last, partial block; zero-filled keys would score 0)."""
    s = tl.dot(q0, kt0)
    s = tl.dot(q1, kt1, s)
    if MASKED:
        s = tl.where(valid[None, :], s, float("-inf"))
    # the scale is positive, so max(s) * scale is max(s * scale) exactly, and s * scale - m is one FMA:
    # one pass over the scores instead of a multiply and a subtract
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc0 = acc0 * alpha[:, None]
    acc1 = acc1 * alpha[:, None]
    p = p.to(v0.dtype)
    acc0 = tl.dot(p, v0, acc0)
    acc1 = tl.dot(p, v1, acc1)
    return acc0, acc1, m_new, l_i


@triton.jit
def _tile(
    q0, q1, acc0, acc1, m_i, l_i, k_ptrs0, k_ptrs1, v_ptrs0, v_ptrs1, start, n_kv, qk_scale, offs_n,
    stride_kn, stride_vn, MASKED: tl.constexpr,
):  # fmt: skip
    """The pointer kernel's loads of one key block (masked past n_kv when MASKED), then the shared step."""
    valid = (start + offs_n) < n_kv
    if MASKED:
        k0 = tl.load(k_ptrs0 + start * stride_kn, mask=valid[None, :], other=0.0)
        k1 = tl.load(k_ptrs1 + start * stride_kn, mask=valid[None, :], other=0.0)
        v0 = tl.load(v_ptrs0 + start * stride_vn, mask=valid[:, None], other=0.0)
        v1 = tl.load(v_ptrs1 + start * stride_vn, mask=valid[:, None], other=0.0)
    else:
        k0 = tl.load(k_ptrs0 + start * stride_kn)
        k1 = tl.load(k_ptrs1 + start * stride_kn)
        v0 = tl.load(v_ptrs0 + start * stride_vn)
        v1 = tl.load(v_ptrs1 + start * stride_vn)
    return _softmax_step(q0, q1, k0, k1, v0, v1, acc0, acc1, m_i, l_i, qk_scale, valid, MASKED)


@triton.autotune(configs=_CONFIGS, key=["n_q", "n_kv", "H", "GROUPS"])
@triton.jit
def _attention_bf16(
    Q,
    K,
    V,
    O,
    qk_scale,
    n_q,
    n_kv,
    n_full,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_ob,
    stride_on,
    stride_oh,
    H: tl.constexpr,
    GROUPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m, bh, b, h, hk, offs_m = _program(H, GROUPS, BLOCK_M)
    q0, q1 = _load_q(Q, b, h, offs_m, n_q, stride_qb, stride_qn, stride_qh)
    offs_n = tl.arange(0, BLOCK_N)
    d0 = tl.arange(0, 64)
    d1 = 64 + tl.arange(0, 32)
    k_base = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn
    k_ptrs0 = k_base + d0[:, None]  # K^T tiles (64, BLOCK_N) and (32, BLOCK_N)
    k_ptrs1 = k_base + d1[:, None]
    v_base = V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn
    v_ptrs0 = v_base + d0[None, :]
    v_ptrs1 = v_base + d1[None, :]
    m_i, l_i, acc0, acc1 = _fresh_state(BLOCK_M)
    # the full key blocks unmasked, then the last keys (n_full: a multiple of 128, so of BLOCK_N) masked
    for last in tl.static_range(2):
        for start in tl.range(n_full if last else 0, n_kv if last else n_full, BLOCK_N):
            acc0, acc1, m_i, l_i = _tile(
                q0, q1, acc0, acc1, m_i, l_i, k_ptrs0, k_ptrs1, v_ptrs0, v_ptrs1, start, n_kv, qk_scale, offs_n,
                stride_kn, stride_vn, last == 1,
            )  # fmt: skip
    _store_o(O, acc0 / l_i[:, None], acc1 / l_i[:, None], b, h, offs_m, n_q, stride_ob, stride_on, stride_oh)


def attention_bf16_pointer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (B, N, Hq, 96), k/v (B, M, Hkv, 96), last dim contiguous -> (B, N, Hq*96) in q's dtype. Every tile
    through pointer arithmetic: any strides (the TMA variant, model/flash_tma.py, needs aligned ones)."""
    B, n_q, H, D = q.shape
    n_kv, Hk = k.shape[1], k.shape[2]
    assert D == 96 and H % Hk == 0 and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    o = torch.empty(B, n_q, H, D, device=q.device, dtype=q.dtype)
    scale = D**-0.5 * _LOG2E

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)

    _attention_bf16[grid](
        q, k, v, o, scale, n_q, n_kv, n_kv - n_kv % 128,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        H=H, GROUPS=H // Hk,
    )  # fmt: skip
    return o.flatten(2)


# -- fp8 --

_FP8_CONFIGS = [
    triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
    for n, w, s in ((128, 8, 3), (64, 8, 3), (128, 4, 3), (128, 8, 2), (64, 4, 4))
]


@triton.autotune(configs=_FP8_CONFIGS, key=["n_q", "n_kv", "H", "GROUPS"])
@triton.jit
def _attention_fp8(
    Q,
    K,
    Vt,
    O,
    QS,
    KS,
    VS,
    sm_log2,
    n_q,
    n_kv,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vh,
    stride_vd,
    stride_ob,
    stride_on,
    stride_oh,
    qs_bh,
    ks_bh,
    H: tl.constexpr,
    GROUPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PV_FP16: tl.constexpr = True,
    STATS: tl.constexpr = False,
    Stats=None,
):
    pid_m, bh, b, h, hk, offs_m = _program(H, GROUPS, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    d0 = tl.arange(0, 64)
    d1 = 64 + tl.arange(0, 32)
    q0, q1 = _load_q(Q, b, h, offs_m, n_q, stride_qb, stride_qn, stride_qh)
    q_scale = tl.load(QS + bh * qs_bh + pid_m) * sm_log2
    bk = b * (H // GROUPS) + hk
    k_base = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn
    vt_base = Vt + b * stride_vb + hk * stride_vh + offs_n[None, :]
    m_i, l_i, acc0, acc1 = _fresh_state(BLOCK_M)
    for start in tl.range(0, n_kv, BLOCK_N):
        valid = (start + offs_n) < n_kv
        k0 = tl.load(k_base + start * stride_kn + d0[:, None], mask=valid[None, :], other=0.0)
        k1 = tl.load(k_base + start * stride_kn + d1[:, None], mask=valid[None, :], other=0.0)
        # K scales come per 128 keys: BLOCK_N divides 128
        k_scale = tl.load(KS + bk * ks_bh + start // 128)
        s = tl.dot(q0, k0)
        s = tl.dot(q1, k1, s)
        s = s * (q_scale * k_scale)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        # x256: small weights stay normal e4m3 numbers; the sum is of the rounded weights, so the output is an
        # exact weighted mean of V whatever the rounding did (no bias towards zero)
        p8 = (p * 256.0).to(tl.float8e4nv)
        l_i = l_i * alpha + tl.sum(p8.to(tl.float32), 1)
        acc0 = acc0 * alpha[:, None]
        acc1 = acc1 * alpha[:, None]
        vt0 = tl.load(vt_base + start + d0[:, None] * stride_vd, mask=valid[None, :], other=0.0)
        vt1 = tl.load(vt_base + start + d1[:, None] * stride_vd, mask=valid[None, :], other=0.0)
        # the second product in fp16 on the same e4m3 values (exact there): the e4m3 product broke rows on the
        # GPU (module docstring); PV_FP16=False is that product, kept to test a newer Triton
        if PV_FP16:
            pb = p8.to(tl.float16)
            acc0 = tl.dot(pb, tl.trans(vt0.to(tl.float16)), acc0)
            acc1 = tl.dot(pb, tl.trans(vt1.to(tl.float16)), acc1)
        else:
            acc0 = tl.dot(p8, tl.trans(vt0), acc0)
            acc1 = tl.dot(p8, tl.trans(vt1), acc1)
        m_i = m_new
    if STATS:  # diagnosis: each row's final running max and sum, (B*H, n_q, 2)
        row = Stats + (bh * n_q + offs_m) * 2
        tl.store(row, m_i, mask=offs_m < n_q)
        tl.store(row + 1, l_i, mask=offs_m < n_q)
    vs = VS + bk * 96
    out0 = acc0 / l_i[:, None] * tl.load(vs + d0)[None, :]
    out1 = acc1 / l_i[:, None] * tl.load(vs + d1)[None, :]
    _store_o(O, out0, out1, b, h, offs_m, n_q, stride_ob, stride_on, stride_oh)


def fp8_from_quantized(q, q8, qs, k8, ks, vt8, vs, block: int = 128) -> torch.Tensor:
    """The fp8 kernel on flash.quantize_fp8's output (q: only its shape and dtype are read; block: the rows
    that share one scale, the kernel's BLOCK_M)."""
    B, n_q, H, D = q.shape
    n_kv, Hk = k8.shape[1], k8.shape[2]
    o = torch.empty(B, n_q, H, D, device=q.device, dtype=q.dtype)
    sm_log2 = D**-0.5 * _LOG2E
    grid = (triton.cdiv(n_q, block), B * H)
    _attention_fp8[grid](
        q8, k8, vt8, o, qs, ks, vs, sm_log2, n_q, n_kv,
        q8.stride(0), q8.stride(1), q8.stride(2), k8.stride(0), k8.stride(1), k8.stride(2),
        vt8.stride(0), vt8.stride(1), vt8.stride(2), o.stride(0), o.stride(1), o.stride(2),
        qs.stride(0), ks.stride(0),
        H=H, GROUPS=H // Hk, BLOCK_M=block,
    )  # fmt: skip
    return o.flatten(2)
