"""Where the fp8 attention kernel's NaNs came from. Runs on a GPU: the quantized operands checked, then the
kernel at each of its autotune configs (bypassing the autotuner) as shipped (P V in fp16 on the e4m3 values)
and with P V as an e4m3 product fed from registers (PV_FP16=False), each row's final running max and sum
stored (STATS), on one image at the DiT's shape and one ragged pair, against the fp8 math in torch
(flash.fp8_reference); for each, the NaN rows of the first head (their residues mod 16 and mod 128 tell a
register-layout fault from a block-level one) and whether the bad rows' max or sum was already broken.
Runs on an H100, Triton 3.6: 2026-12-07 evening (bench/results/fp8-debug-h100-2026-12-07.json: NaN in half
the rows, every config) and night (-night.json, with the variants: the e4m3 P V product is the fault — NaN in
rows 0-7 of every 16, their row sums broken, the running max fine; P V in fp16 finite everywhere, within 0.025
of the fp8 math; a 64-wide second part of QK^T, tried too, did not help).

    PYTHONPATH=src python bench/fp8_debug.py [OUT.json]   (OUT.json: written after every variant)
"""

import json
import sys
from pathlib import Path

import torch
import triton

from newbie.model import flash, flash_triton


def _rel(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def run(B, N, M, out, save, H=24, HK=8, D=96):
    """Fills `out` (saved by `save` after every variant)."""
    g = torch.Generator("cuda").manual_seed(N)
    q, k, v = (
        torch.randn(B, n, h, D, device="cuda", generator=g).bfloat16() for n, h in ((N, H), (M, HK), (M, HK))
    )
    q8, qs, k8, ks, vt8, vs = flash.quantize_fp8(q, k, v)
    out |= {
        "shape": [B, N, M],
        "nonfinite_operands": {
            n: int((~t.float().isfinite()).sum())
            for n, t in (("q8", q8), ("qs", qs), ("k8", k8), ("ks", ks), ("vt8", vt8), ("vs", vs))
        },
        "strides": {"qs": list(qs.stride()), "ks": list(ks.stride()), "vt8": list(vt8.stride())},
    }
    ref = flash.fp8_reference(q, k, v)
    out["ref_finite"] = bool(ref.isfinite().all())
    # every config as shipped (P V in fp16), then every config with the e4m3 P V product (PV_FP16=False), the
    # form that broke rows on Triton 3.6 / H100
    variants = [(c, {}) for c in flash_triton._FP8_CONFIGS]
    variants += [(c, {"PV_FP16": False}) for c in flash_triton._FP8_CONFIGS]
    per = out["configs"] = {}
    for cfg, flags in variants:
        save()
        bn, w, s = cfg.kwargs["BLOCK_N"], cfg.num_warps, cfg.num_stages
        name = f"{bn}/{w}/{s}" + ("/pv_e4m3" if flags else "")
        o = torch.full((B, N, H, D), float("nan"), device="cuda", dtype=q.dtype)
        stats = torch.full((B * H, N, 2), float("nan"), device="cuda")
        try:
            flash_triton._attention_fp8.fn[(triton.cdiv(N, flash.FP8_BLOCK), B * H)](
                q8, k8, vt8, o, qs, ks, vs, D**-0.5 * flash.LOG2E, N, M,
                *q8.stride()[:3], *k8.stride()[:3], *vt8.stride()[:3], *o.stride()[:3],
                qs.stride(0), ks.stride(0),
                H=H, GROUPS=H // HK, BLOCK_M=flash.FP8_BLOCK, BLOCK_N=bn, num_warps=w, num_stages=s,
                STATS=True, Stats=stats, **flags,
            )  # fmt: skip
            torch.cuda.synchronize()
            bad = ~o.isfinite()
            rows = bad[0, :, 0].any(-1).nonzero().flatten().tolist()  # the first head's NaN rows
            bad_rh = bad[0].any(-1).transpose(0, 1).reshape(-1)  # (H*N,) in the stats' order (B = 1)
            m_i, l_i = stats[..., 0].reshape(-1), stats[..., 1].reshape(-1)
            per[name] = {
                "rows_mod_16": sorted({r % 16 for r in rows}),
                "rows_mod_128_first": sorted({r % 128 for r in rows})[:20],
                "first_rows": rows[:12],
                "nonfinite": int(bad.sum()),
                "nan": int(o.isnan().sum()),
                "nonfinite_rows": int(bad.any(-1).any(-1).sum()),
                "nonfinite_heads": int(bad.any(-1).any(1).sum()),
                # in the bad rows: is the running max already broken (QK^T), or the sum (the P rounding), or
                # only the accumulator (P V)?
                "bad_rows_m_nonfinite": int((~m_i[bad_rh].isfinite()).sum()),
                "bad_rows_l_zero_or_nonfinite": int(((l_i[bad_rh] == 0) | ~l_i[bad_rh].isfinite()).sum()),
                "good_rows_l_range": [float(l_i[~bad_rh].min()), float(l_i[~bad_rh].max())]
                if (~bad_rh).any()
                else None,
                "rel_vs_ref": _rel(o.flatten(2), ref) if not bad.any() else None,
                "rel_finite_part": _rel(o.flatten(2)[~bad.flatten(2)], ref[~bad.flatten(2)])
                if bad.any() and not bad.all()
                else None,
            }
        except Exception as e:  # noqa: BLE001
            per[name] = f"{type(e).__name__}: {str(e)[:200]}"
    auto = flash.flash96(q, k, v, True)
    out["flash96_nonfinite"] = int((~auto.isfinite()).sum())
    return out


def main() -> int:
    res = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "runs": []}
    path = sys.argv[1] if len(sys.argv) > 1 else None

    def save():  # after every variant: a run stopped by its time limit keeps what it measured
        if path:
            Path(path).write_text(json.dumps(res, indent=1))

    for shape in ((1, 4352, 4352), (1, 300, 777)):
        res["runs"].append({})
        run(*shape, res["runs"][-1], save)
        save()
    if not path:
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
