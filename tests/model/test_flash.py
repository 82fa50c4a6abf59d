"""Our head-size-96 attention kernels (model/flash.py): their math on the CPU, the kernels on a GPU."""

import pytest
import torch
import torch.nn.functional as F

from newbie.model import flash
from newbie.model.math import attention, backend_order


def _sdpa(q, k, v):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True).transpose(1, 2).flatten(2)


def _qkv(B, N, M, H=6, HK=2, D=96, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, N, H, D, generator=g).to(dtype),
        torch.randn(B, M, HK, D, generator=g).to(dtype),
        torch.randn(B, M, HK, D, generator=g).to(dtype),
    )


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("B,N,M,block", [(1, 128, 128, 64), (2, 77, 300, 128), (1, 257, 129, 64)])
def test_blockwise_math_is_attention(B, N, M, block):
    """The kernels' algorithm (96 = 64 + 32, keys in blocks, online softmax in base 2), ragged tails and GQA."""
    q, k, v = _qkv(B, N, M)
    assert torch.allclose(flash.blockwise_reference(q, k, v, block), _sdpa(q, k, v), atol=2e-6, rtol=1e-5)


def test_blockwise_math_in_bf16_is_as_close_as_sdpa():
    q, k, v = _qkv(1, 200, 200, dtype=torch.bfloat16, seed=1)
    exact = _sdpa(q.float(), k.float(), v.float())
    assert _rel(flash.blockwise_reference(q, k, v), exact) < 2 * _rel(_sdpa(q, k, v), exact) + 1e-3


def test_fp8_quantization_reconstructs_within_e4m3_precision():
    q, k, v = _qkv(2, 300, 260, dtype=torch.bfloat16, seed=2)
    q8, qs, k8, ks, vt8, vs = flash.quantize_fp8(q, k, v)
    assert q8.dtype == k8.dtype == vt8.dtype == torch.float8_e4m3fn
    assert qs.shape == (2 * 6, 3) and ks.shape == (2 * 2, 3) and vs.shape == (2 * 2, 96)
    assert vt8.shape == (2, 2, 96, 272)  # transposed, keys rounded up to 16
    per_row = qs.view(2, 6, 3).repeat_interleave(flash.FP8_BLOCK, 2)[:, :, :300].permute(0, 2, 1)[..., None]
    assert _rel(q8.float() * per_row, q) < 0.04  # e4m3: 3 mantissa bits
    assert float(vt8[..., 260:].float().abs().max()) == 0.0  # the padding holds zeros


def test_fp8_scales_are_rows_the_kernel_can_index():
    """The kernel reads scale (row, block) at row * stride(0) + block: with one image the block maxima came out
    as a permuted view (stride (1, H)), and the H100 run gave a relative error of 0.35 instead of ~0.05."""
    q, k, v = _qkv(1, 300, 260, dtype=torch.bfloat16, seed=4)
    _, qs, _, ks, _, vs = flash.quantize_fp8(q, k, v)
    assert qs.is_contiguous() and ks.is_contiguous() and vs.is_contiguous()


def test_fp8_math_error_is_bounded_and_softmax_invariant_to_key_shift():
    q, k, v = _qkv(1, 256, 384, dtype=torch.bfloat16, seed=3)
    exact = _sdpa(q.float(), k.float(), v.float())
    assert _rel(flash.fp8_reference(q, k, v), exact) < 0.08
    # K's mean over keys is removed before quantizing: a large shared offset costs no precision
    shifted = k + 20 * torch.randn(1, 1, 2, 96).to(k.dtype)
    assert _rel(flash.fp8_reference(q, shifted, v), _sdpa(q.float(), shifted.float(), v.float())) < 0.08


def test_backend_names_and_cpu_fallback():
    assert backend_order("triton") == [] and backend_order("triton-fp8") == []
    q, k, v = _qkv(1, 50, 50)
    assert not flash.supported(q, k)  # a CPU tensor: PyTorch's SDPA runs instead
    assert torch.equal(attention(q, k, v, None, "triton"), attention(q, k, v, None, "auto"))


gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and flash._triton_available()), reason="the kernels need CUDA and Triton"
)


@gpu
@pytest.mark.parametrize("B,N,M", [(1, 4352, 4352), (2, 4097, 4097), (1, 300, 777)])
def test_kernels_on_the_gpu(B, N, M):
    q, k, v = (t.cuda() for t in _qkv(B, N, M, H=24, HK=8, dtype=torch.bfloat16, seed=N))
    exact = _sdpa(q.float(), k.float(), v.float())
    out = flash.flash96(q, k, v, False)
    assert out.isfinite().all() and _rel(out, exact) < 2 * _rel(_sdpa(q, k, v), exact) + 1e-3
    o8 = flash.flash96(q, k, v, True)
    assert _rel(o8, flash.fp8_reference(q, k, v)) < 0.06 and _rel(o8, exact) < 0.1


def test_the_fp8_quantization_traces_as_one_graph_for_inductor_to_fuse():
    # flash96(fp8=True) runs quantize_fp8 as torch code in front of the kernel's op, so a compiled block
    # traces it (no graph break, any caption length) and inductor fuses it; the result is the eager one
    torch._dynamo.reset()
    try:
        compiled = torch.compile(flash.quantize_fp8, fullgraph=True, dynamic=True, backend="aot_eager")
        for n in (200, 333):
            q, k, v = (torch.randn(2, n, h, 96).bfloat16() for h in (6, 2, 2))
            for got, want in zip(compiled(q, k, v), flash.quantize_fp8(q, k, v)):
                assert got.dtype == want.dtype and got.shape == want.shape
                torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=0)
    finally:
        torch._dynamo.reset()


@gpu
@pytest.mark.parametrize("B,N,M,fused", [(2, 4097, 4097, True), (2, 300, 777, False), (1, 333, 333, True)])
def test_both_bf16_variants_on_the_gpu(B, N, M, fused):
    """Pointer and TMA (model/flash_tma.py, where the GPU has it) at ragged lengths, two images and views of
    one fused qkv projection; the second image's keys inf must not reach the first image's output."""
    from newbie.model import flash_variant

    if fused:
        x = torch.randn(B, N, (24 + 16) * 96, device="cuda", dtype=torch.bfloat16)
        q, k, v = (t.unflatten(-1, (-1, 96)) for t in x.split([24 * 96, 8 * 96, 8 * 96], -1))
    else:
        q, k, v = (t.cuda() for t in _qkv(B, N, M, H=24, HK=8, dtype=torch.bfloat16, seed=N))
    exact = _sdpa(q.float(), k.float(), v.float())
    for variant in flash_variant.VARIANTS:
        out = flash.attention_bf16(q, k, v, variant)
        assert out.isfinite().all() and _rel(out, exact) < 2 * _rel(_sdpa(q, k, v), exact) + 1e-3, variant
    if B == 2 and not fused:
        k[1], v[1] = float("inf"), float("inf")
        first = _sdpa(q[:1].float(), k[:1].float(), v[:1].float())
        for variant in flash_variant.VARIANTS:
            out = flash.attention_bf16(q, k, v, variant)[:1]
            assert out.isfinite().all() and _rel(out, first) < 1e-2, variant
