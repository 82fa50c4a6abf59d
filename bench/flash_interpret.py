"""Our attention kernels (model/flash_triton.py) run by Triton's interpreter on the CPU, against the math they
implement: a check that needs no GPU. Setup, outside the project's environment (the interpreter needs numpy < 2):

    pip install --target /tmp/tri triton==3.6.0 && pip install --target /tmp/np1 "numpy<2"
    PYTHONPATH=/tmp/np1:/tmp/tri:src TRITON_INTERPRET=1 python bench/flash_interpret.py

The interpreter computes in fp32 (its bf16 is not emulated, so the bf16 kernel runs on fp32 inputs) and rounds
fp32 -> e4m3 less precisely than the hardware (about 3.0% mean error against torch's 2.1% on uniform data), so
the fp8 kernel's error here is a little above the GPU's. The fp8 kernel is fed its quantized operands as fp32
codes with P's rounding kept. This found the fp8 kernel's scale-indexing bug of 2026-12-07 on the CPU.
"""

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402

from newbie.model import flash, flash_triton  # noqa: E402


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def main() -> int:
    torch.manual_seed(0)
    B, N, M, H, HK, D = 1, 200, 300, 6, 2, 96
    q, k, v = torch.randn(B, N, H, D), torch.randn(B, M, HK, D), torch.randn(B, M, HK, D)
    exact = torch.nn.functional.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k, v)), enable_gqa=True
    ).transpose(1, 2)
    o = torch.full((B, N, H, D), float("nan"))
    flash_triton._attention_bf16.fn[(triton.cdiv(N, 64), B * H)](
        q, k, v, o, D**-0.5 * flash.LOG2E, N, M, M - M % 128,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        H=H, GROUPS=H // HK, BLOCK_M=64, BLOCK_N=64,
    )  # fmt: skip
    bf = _rel(o, exact)
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
        f"bf16 kernel (fp32 here) vs exact: {bf:.2e}; fp8 kernel vs exact: {f8:.4f} (its math in torch: {ref8:.4f})"
    )
    return 0 if bf < 1e-5 and not o8.isnan().any() and f8 < 2 * ref8 else 1


if __name__ == "__main__":
    sys.exit(main())
