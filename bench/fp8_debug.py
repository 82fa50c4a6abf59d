"""Where the fp8 attention kernel's NaNs come from (2026-12-07 evening, H100: every output NaN, while Triton's
interpreter on the CPU gives the dequantized attention within 0.07). Runs on a GPU: the quantized operands
checked, then the kernel at each of its autotune configs (bypassing the autotuner), and once with its second
product in fp16 (PV_FP16: every e4m3 value is exact in fp16, so only the e4m3 operand path differs), on one
image at the DiT's shape and one ragged pair, against the fp8 math in torch (flash.fp8_reference); for each, the
NaN rows of the first head (their residues mod 16 and mod 128 tell a register-layout fault from a block-level
one). Prints one JSON object. First GPU run, 2026-12-07: bench/results/fp8-debug-h100-2026-12-07.json.

    PYTHONPATH=src python bench/fp8_debug.py
"""

import json
import sys

import torch
import triton

from newbie.model import flash, flash_triton


def _rel(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def run(B, N, M, H=24, HK=8, D=96):
    g = torch.Generator("cuda").manual_seed(N)
    q, k, v = (
        torch.randn(B, n, h, D, device="cuda", generator=g).bfloat16() for n, h in ((N, H), (M, HK), (M, HK))
    )
    q8, qs, k8, ks, vt8, vs = flash.quantize_fp8(q, k, v)
    out = {
        "shape": [B, N, M],
        "nonfinite_operands": {
            n: int((~t.float().isfinite()).sum())
            for n, t in (("q8", q8), ("qs", qs), ("k8", k8), ("ks", ks), ("vt8", vt8), ("vs", vs))
        },
        "strides": {"qs": list(qs.stride()), "ks": list(ks.stride()), "vt8": list(vt8.stride())},
    }
    ref = flash.fp8_reference(q, k, v)
    out["ref_finite"] = bool(ref.isfinite().all())
    per = {}
    variants = [(c, False) for c in flash_triton._FP8_CONFIGS] + [(flash_triton._FP8_CONFIGS[0], True)]
    for cfg, pv_fp16 in variants:
        bn, w, s = cfg.kwargs["BLOCK_N"], cfg.num_warps, cfg.num_stages
        o = torch.full((B, N, H, D), float("nan"), device="cuda", dtype=q.dtype)
        try:
            flash_triton._attention_fp8.fn[(triton.cdiv(N, flash.FP8_BLOCK), B * H)](
                q8, k8, vt8, o, qs, ks, vs, D**-0.5 * flash.LOG2E, N, M,
                *q8.stride()[:3], *k8.stride()[:3], *vt8.stride()[:3], *o.stride()[:3],
                qs.stride(0), ks.stride(0),
                H=H, GROUPS=H // HK, BLOCK_M=flash.FP8_BLOCK, BLOCK_N=bn, num_warps=w, num_stages=s,
                PV_FP16=pv_fp16,
            )  # fmt: skip
            torch.cuda.synchronize()
            bad = ~o.isfinite()
            rows = bad[0, :, 0].any(-1).nonzero().flatten().tolist()  # the first head's NaN rows
            per[f"{bn}/{w}/{s}" + ("/pv_fp16" if pv_fp16 else "")] = {
                "rows_mod_16": sorted({r % 16 for r in rows}),
                "rows_mod_128_first": sorted({r % 128 for r in rows})[:20],
                "first_rows": rows[:12],
                "nonfinite": int(bad.sum()),
                "nonfinite_rows": int(bad.any(-1).any(-1).sum()),
                "nonfinite_heads": int(bad.any(-1).any(1).sum()),
                "rel_vs_ref": _rel(o.flatten(2), ref) if not bad.any() else None,
                "rel_finite_part": _rel(o.flatten(2)[~bad.flatten(2)], ref[~bad.flatten(2)])
                if bad.any() and not bad.all()
                else None,
            }
        except Exception as e:  # noqa: BLE001
            per[f"{bn}/{w}/{s}" + ("/pv_fp16" if pv_fp16 else "")] = f"{type(e).__name__}: {str(e)[:200]}"
    out["configs"] = per
    auto = flash.flash96(q, k, v, True)
    out["flash96_nonfinite"] = int((~auto.isfinite()).sum())
    return out


def main() -> int:
    res = {
        "device": torch.cuda.get_device_name(),
        "triton": triton.__version__,
        "runs": [run(1, 4352, 4352), run(1, 300, 777)],
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
