# ruff: noqa: B023  (each timed lambda is called inside the iteration that made it)
"""GPU check and timing of our head-size-96 attention kernels (model/flash.py) against PyTorch's SDPA backends.

    python bench/attention_kernel.py [--json OUT.json]

Correctness first (fresh random inputs each check, rel. error against fp32 math), of both bf16 variants
("pointer" and "tma", model/flash_tma.py) at ragged lengths, two images and views of one fused qkv projection,
and that TMA never reads past an image's rows (the second image's keys and values inf: the first image's
output must stay exact). Then median times (triton.testing.do_bench) at the DiT's shapes: 24 query / 8 KV
heads, head size 96, 4,352 tokens (1024², 256 caption tokens) and 16,640 (2048²), each variant on its own and
the "auto" choice (which one it took: `auto_ran`). TFLOP/s counts 4*B*N*M*D*Hq per call (QK^T and PV).
Exit status 1 when a bf16 variant is out of tolerance (2x SDPA's own bf16 error + 1e-3).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "src")
from newbie.model import flash, flash_variant  # noqa: E402

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


def variant_checks(q, k, v, r, c: dict) -> bool:
    """Each bf16 variant's error against r into c (or why it did not run); whether all are in tolerance."""
    ok = True
    bound = 2 * c["sdpa_bf16_rel"] + 1e-3
    for name in flash_variant.VARIANTS:
        try:
            out = flash.attention_bf16(q, k, v, name)
        except Exception as e:  # noqa: BLE001
            c[f"{name}_rel"], ok = f"{type(e).__name__}: {str(e)[:300]}", False
            continue
        ran = flash_variant.ran(q, k)
        c[f"{name}_rel"] = rel(out, r) if ran == name else f"not run: {ran} instead (TMA not possible here)"
        ok = ok and (ran != name or (bool(out.isfinite().all()) and c[f"{name}_rel"] < bound))
    return ok


def tma_isolation() -> dict:
    """Two images, the second's keys and values inf; a read past the first image's rows would make NaN."""
    q, k, v = inputs(2, 4097, 300, seed=99)
    k[1], v[1] = float("inf"), float("inf")
    r = ref32(q[:1], k[:1], v[:1])
    out = {}
    for name in flash_variant.VARIANTS:
        try:
            first = flash.attention_bf16(q, k, v, name)[:1]
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {str(e)[:300]}"
            continue
        out[name] = rel(first, r) if first.isfinite().all() else "not finite: read the next image's rows"
        out[name + "_ran"] = flash_variant.ran(q, k)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    import triton
    from triton.testing import do_bench

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    checks, ok = [], True
    for B, N, M, layout in ((1, 4352, None, "bnhd"), (2, 4097, None, "bnhd"), (1, 300, 777, "bnhd"),
                            (2, 300, 777, "bnhd"), (2, 4352, None, "qkv"), (2, 4097, None, "qkv"),
                            (2, 333, None, "qkv"), (1, 16640, None, "bnhd")):  # fmt: skip
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
        ok = variant_checks(q, k, v, r, c) and ok
        c["auto_ran"] = flash_variant.ran(q, k)
        c["auto_failed"] = flash_variant.failed(q, k)
        if N <= 4352:
            c["fp8_vs_torch_fp8_reference"] = rel(o8, flash.fp8_reference(q, k, v))
        checks.append(c)
        print(c, flush=True)
    res["checks"] = checks
    res["tma_isolation"] = tma_isolation()
    print("isolation", res["tma_isolation"], flush=True)
    ok = ok and all(
        not isinstance(x, str) or x in flash_variant.VARIANTS for x in res["tma_isolation"].values()
    )
    res["ok"] = ok
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
            try:
                flash.attention_bf16(q, k, v, "tma")
                tma_runs = flash_variant.ran(q, k) == "tma"
            except Exception:  # noqa: BLE001 - timed below, where its error is recorded
                tma_runs = True
            for name, fn in (
                ("cudnn", lambda: sdpa(q, k, v, SDPBackend.CUDNN_ATTENTION)),
                ("flash", lambda: sdpa(q, k, v, SDPBackend.FLASH_ATTENTION)),
                ("efficient", lambda: sdpa(q, k, v, SDPBackend.EFFICIENT_ATTENTION)),
                ("triton", lambda: flash.flash96(q, k, v, False)),
                ("triton-pointer", lambda: flash.attention_bf16(q, k, v, "pointer")),
                ("triton-tma", lambda: flash.attention_bf16(q, k, v, "tma")),
                ("triton-fp8", lambda: flash.flash96(q, k, v, True)),
                ("triton-fp8-kernel-only", None),
            ):
                if name == "triton-tma" and not tma_runs:
                    row[name] = (
                        "not run: TMA is not possible here (Triton without TensorDescriptor, pre-sm90)"
                    )
                    continue
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
            flash.flash96(q, k, v, False)
            row["auto_ran"] = flash_variant.ran(q, k)
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
        "tma": str(getattr(getattr(sys.modules.get("newbie.model.flash_tma"), "_attention_bf16_tma", None),
                           "best_config", None)),
    }  # fmt: skip
    print(res["autotune"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
