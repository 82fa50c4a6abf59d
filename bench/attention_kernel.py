# ruff: noqa: B023  (each timed lambda is called inside the iteration that made it)
"""GPU check and timing of our head-size-96 attention kernels (model/flash.py) against PyTorch's SDPA backends.

    python bench/attention_kernel.py [--json OUT.json]

Correctness first (fresh random inputs each check, output poisoned first, rel. error against fp32 math), then
median times (triton.testing.do_bench) at the DiT's shapes: 24 query / 8 KV heads, head size 96, 4,352 tokens
(1024², 256 caption tokens) and 16,640 (2048²). TFLOP/s counts 4*N*M*D*Hq per call (QK^T and PV).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "src")
from newbie.model import flash  # noqa: E402

H, HK, D = 24, 8, 96


def sdpa(q, k, v, backend=None):
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if backend is None:
        return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True).transpose(1, 2).flatten(2)
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True).transpose(1, 2).flatten(2)


def ref32(q, k, v):
    return sdpa(q.float(), k.float(), v.float(), SDPBackend.MATH)


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def inputs(B, N, M=None, seed=0, layout="bnhd"):
    g = torch.Generator("cuda").manual_seed(seed)
    M = M or N
    if layout == "qkv":  # views into one fused projection output, as the DiT makes them
        x = torch.randn(B, N, (H + 2 * HK) * D, device="cuda", dtype=torch.bfloat16, generator=g)
        q, k, v = x.split([H * D, HK * D, HK * D], -1)
        return q.unflatten(-1, (H, D)), k.unflatten(-1, (HK, D)), v.unflatten(-1, (HK, D))
    q = torch.randn(B, N, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, M, HK, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(B, M, HK, D, device="cuda", dtype=torch.bfloat16, generator=g)
    return q, k, v


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    import triton
    from triton.testing import do_bench

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    checks = []
    for B, N, M, layout in ((1, 4352, None, "bnhd"), (2, 4097, None, "bnhd"), (1, 300, 777, "bnhd"),
                            (2, 4352, None, "qkv"), (1, 16640, None, "bnhd")):  # fmt: skip
        q, k, v = inputs(B, N, M, seed=len(checks), layout=layout)
        r = ref32(q, k, v)
        out = flash.flash96(q, k, v, False)
        o8 = flash.flash96(q, k, v, True)

        c = {
            "B": B,
            "N": N,
            "M": M or N,
            "layout": layout,
            "bf16_rel": rel(out, r),
            "fp8_rel": rel(o8, r),
            "sdpa_bf16_rel": rel(sdpa(q, k, v), r),
            "finite": bool(out.isfinite().all() and o8.isfinite().all()),
        }
        if N <= 4352:
            c["fp8_vs_torch_fp8_reference"] = rel(o8, flash.fp8_reference(q, k, v))
        checks.append(c)
        print(c, flush=True)
    res["checks"] = checks
    # inside torch.compile (custom op): same numbers as eager
    q, k, v = inputs(2, 4352, layout="qkv", seed=9)
    f = torch.compile(lambda a, b, c: flash.flash96(a, b, c, False) * 2, fullgraph=True)
    res["compiled_rel_to_eager"] = rel(f(q, k, v), flash.flash96(q, k, v, False) * 2)
    print("compiled vs eager", res["compiled_rel_to_eager"], flush=True)

    from newbie.model import flash_triton

    times = {}
    for N in (4352, 16640):
        for B in (1, 2):
            q, k, v = inputs(B, N, seed=N + B)
            flops = 4 * B * N * N * D * H
            row = {}
            for name, fn in (
                ("cudnn", lambda: sdpa(q, k, v, SDPBackend.CUDNN_ATTENTION)),
                ("flash", lambda: sdpa(q, k, v, SDPBackend.FLASH_ATTENTION)),
                ("efficient", lambda: sdpa(q, k, v, SDPBackend.EFFICIENT_ATTENTION)),
                ("triton", lambda: flash.flash96(q, k, v, False)),
                ("triton-fp8", lambda: flash.flash96(q, k, v, True)),
                ("triton-fp8-kernel-only", None),
            ):
                try:
                    if fn is None:
                        from newbie.model import flash_triton

                        pre = flash.quantize_fp8(q, k, v)
                        fn = lambda: flash_triton.fp8_from_quantized(q, *pre, block=flash.FP8_BLOCK)  # noqa: E731
                        row["quantize_ms"] = do_bench(
                            lambda: flash.quantize_fp8(q, k, v), return_mode="median"
                        )
                    ms = do_bench(fn, warmup=50, rep=300, return_mode="median")
                    row[name] = {"ms": ms, "tflops": flops / ms / 1e9}
                except Exception as e:  # noqa: BLE001
                    row[name] = f"{type(e).__name__}: {str(e)[:160]}"
            times[f"N{N}_B{B}"] = row
            print(
                N,
                B,
                {k: (round(v["tflops"], 1) if isinstance(v, dict) else v) for k, v in row.items()},
                flush=True,
            )
    res["times"] = times
    from newbie.model import flash_triton

    res["autotune"] = {
        "bf16": str(getattr(flash_triton._attention_bf16, "best_config", None)),
        "fp8": str(getattr(flash_triton._attention_fp8, "best_config", None)),
    }
    print(res["autotune"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
