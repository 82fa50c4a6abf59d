"""Our attention kernels (model/flash_triton.py, model/flash_tma.py) run by Triton's interpreter on the CPU,
against the math they implement: a check that needs no GPU. Setup, outside the project's environment (the
interpreter needs numpy < 2):

    pip install --target /tmp/tri triton==3.6.0 && pip install --target /tmp/np1 "numpy<2"
    PYTHONPATH=/tmp/np1:/tmp/tri:src TRITON_INTERPRET=1 python bench/flash_interpret.py

The interpreter computes in fp32 (its bf16 is not emulated, so the bf16 kernels run on fp32 inputs) and rounds
fp32 -> e4m3 less precisely than the hardware (about 3.0% mean error against torch's 2.1% on uniform data), so
the fp8 kernel's error here is a little above the GPU's. The fp8 kernel is fed its quantized operands as fp32
codes with P's rounding kept. This found the fp8 kernel's scale-indexing bug of 2026-12-07 on the CPU.

The bf16 kernels run at ragged lengths with two images, on separate tensors and on strided views of one
fused (B, N, (H + 2 Hk) * 96) projection, in both tile sizes; the TMA variant's descriptors zero-fill past an
image's rows (the interpreter emulates that), checked by filling the second image's keys and values with inf:
the first image's output must stay exact.
"""

import os
import sys
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402

from newbie.model import flash, flash_tma, flash_triton, flash_variant  # noqa: E402

H, HK, D = 6, 2, 96


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _exact(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k, v)), enable_gqa=True
    ).transpose(1, 2)


def _inputs(B, N, M, fused):
    if fused:  # views into one projection output, as the DiT makes them (N == M)
        x = torch.randn(B, N, (H + 2 * HK) * D)
        q, k, v = x.split([H * D, HK * D, HK * D], -1)
        return q.unflatten(-1, (H, D)), k.unflatten(-1, (HK, D)), v.unflatten(-1, (HK, D))
    return torch.randn(B, N, H, D), torch.randn(B, M, HK, D), torch.randn(B, M, HK, D)


def _pointer(q, k, v, block_m, block_n):
    B, N, M = q.shape[0], q.shape[1], k.shape[1]
    o = torch.full((B, N, H, D), float("nan"))
    flash_triton._attention_bf16.fn[(triton.cdiv(N, block_m), B * H)](
        q, k, v, o, D**-0.5 * flash.LOG2E, N, M, M - M % 128,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        H=H, GROUPS=H // HK, BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    return o


def _tma(q, k, v, block_m, block_n):
    B, N, M = q.shape[0], q.shape[1], k.shape[1]
    o = torch.full((B, N, H, D), float("nan"))
    flash_tma._attention_bf16_tma.fn[(triton.cdiv(N, block_m), B * H)](
        *flash_tma.descriptors(q, k, v, block_m, block_n), o, D**-0.5 * flash.LOG2E, N, M, M - M % 128,
        *o.stride()[:3], H=H, GROUPS=H // HK, FLAT=B == 1, BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    return o


def _bf16_checks() -> float:
    """The worst relative error of both bf16 kernels against exact attention over the cases."""
    worst = 0.0
    for B, N, M, fused, bm, bn in ((2, 200, 300, False, 64, 64), (2, 150, 150, True, 128, 64),
                                   (1, 77, 260, False, 64, 128), (2, 131, 131, True, 64, 64),
                                   (1, 100, 100, True, 128, 128)):  # fmt: skip
        q, k, v = _inputs(B, N, M, fused)
        exact = _exact(q, k, v)
        for name, kernel in (("pointer", _pointer), ("tma", _tma)):
            err = _rel(kernel(q, k, v, bm, bn), exact)
            print(f"bf16 {name:7} B={B} N={N} M={M} fused={fused} blocks {bm}x{bn}: {err:.2e}")
            worst = max(worst, err)
    q, k, v = _inputs(2, 100, 200, False)
    k[1], v[1] = float("inf"), float("inf")  # a read past image 0's keys into image 1 would make NaN
    with warnings.catch_warnings():  # image 1's own output is NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        first = _tma(q, k, v, 64, 64)[0]
    err = _rel(first, _exact(q[:1], k[:1], v[:1])[0]) if first.isfinite().all() else float("inf")
    print(f"bf16 tma     image 0 beside an image of inf keys and values: {err:.2e}")
    return max(worst, err)


def _host_path() -> float:
    """flash.attention_bf16's own path for each variant (descriptors, grid, the autotuner's pre-hook), with
    one config per kernel (the autotuner's timing needs CUDA) and TMA declared possible (this is a CPU)."""
    flash._tma_possible = lambda device: True
    for kernel in (flash_triton._attention_bf16, flash_tma._attention_bf16_tma):
        kernel.configs = [c for c in kernel.configs if c.kwargs == {"BLOCK_M": 128, "BLOCK_N": 64}][:1]
    q, k, v = _inputs(2, 150, 150, True)
    exact = _exact(q, k, v).flatten(2)
    worst = 0.0
    for name in flash_variant.VARIANTS:
        err = _rel(flash.attention_bf16(q, k, v, name), exact)
        print(f"bf16 {name:7} through flash.attention_bf16 (ran {flash_variant.ran(q, k)}): {err:.2e}")
        worst = max(worst, err if flash_variant.ran(q, k) == name else float("inf"))
    return worst


def main() -> int:
    torch.manual_seed(0)
    bf = max(_bf16_checks(), _host_path())
    B, N, M = 1, 200, 300
    q, k, v = torch.randn(B, N, H, D), torch.randn(B, M, HK, D), torch.randn(B, M, HK, D)
    exact = _exact(q, k, v)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    q8, qs, k8, ks, vt8, vs = flash.quantize_fp8(qb, kb, vb)
    o8 = torch.full((B, N, H, D), float("nan"))
    flash_triton._attention_fp8.fn[(triton.cdiv(N, flash.FP8_BLOCK), B * H)](
        q8, k8, vt8, o8, qs, ks, vs, D**-0.5 * flash.LOG2E, N, M,
        *q8.stride()[:3], *k8.stride()[:3], *vt8.stride()[:3], *o8.stride()[:3],
        qs.stride(0), ks.stride(0),
        H=H, GROUPS=H // HK, BLOCK_M=flash.FP8_BLOCK, BLOCK_N=64,
    )  # fmt: skip
    f8 = _rel(o8, exact)
    ref8 = _rel(flash.fp8_reference(qb, kb, vb), exact.flatten(2))
    print(
        f"bf16 kernels (fp32 here) vs exact: worst {bf:.2e}; fp8 kernel vs exact: {f8:.4f} "
        f"(its math in torch: {ref8:.4f})"
    )
    return 0 if bf < 1e-5 and not o8.isnan().any() and f8 < 2 * ref8 else 1


if __name__ == "__main__":
    sys.exit(main())
