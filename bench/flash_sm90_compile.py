"""Our bf16 attention kernels (pointer: model/flash_triton.py, TMA: model/flash_tma.py) compiled for Hopper
(sm_90a) on a machine without a GPU: each autotune config through Triton's compiler and ptxas, printing the
registers per thread, the bytes spilled to local memory, the shared memory and the count of wgmma and TMA
instructions. It catches what the interpreter cannot (a construct the Hopper backend rejects, a config that
spills) before any GPU time is spent. Setup as for bench/flash_interpret.py (Triton in /tmp/tri):

    PYTHONPATH=/tmp/np1:/tmp/tri:src python bench/flash_sm90_compile.py [--json OUT.json]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from newbie.model import flash_tma, flash_triton

H, GROUPS = 24, 3
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def _tma_source(bm: int, bn: int, flat: bool) -> ASTSource:
    lead = [] if flat else [1]
    sig = {}
    for name in ("q", "k", "v"):
        for part, width in (("0", 64), ("1", 32)):
            box = ",".join(map(str, [*lead, bm if name == "q" else bn, width]))
            sig[f"desc_{name}{part}"] = f"tensordesc<bf16[{box}]>"
    sig |= {"O": "*bf16", "qk_scale": "fp32", **dict.fromkeys(("n_q", "n_kv", "n_full"), "i32")}
    sig |= dict.fromkeys(("stride_ob", "stride_on", "stride_oh"), "i32")
    sig |= dict.fromkeys(("H", "GROUPS", "FLAT", "BLOCK_M", "BLOCK_N"), "constexpr")
    consts = {"H": H, "GROUPS": GROUPS, "FLAT": flat, "BLOCK_M": bm, "BLOCK_N": bn}
    return ASTSource(flash_tma._attention_bf16_tma.fn, sig, constexprs=consts)


def _pointer_source(bm: int, bn: int) -> ASTSource:
    sig = {
        **dict.fromkeys("QKVO", "*bf16"),
        "qk_scale": "fp32",
        **dict.fromkeys(("n_q", "n_kv", "n_full"), "i32"),
    }
    sig |= {f"stride_{t}{d}": "i32" for t in "qkvo" for d in "bnh"}
    sig |= dict.fromkeys(("H", "GROUPS", "BLOCK_M", "BLOCK_N"), "constexpr")
    consts = {"H": H, "GROUPS": GROUPS, "BLOCK_M": bm, "BLOCK_N": bn}
    return ASTSource(flash_triton._attention_bf16.fn, sig, constexprs=consts)


def _compile(src: ASTSource, warps: int, stages: int, tmp: Path) -> dict:
    k = triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages}
    )
    ptx = tmp / "k.ptx"
    ptx.write_text(k.asm["ptx"])
    info = subprocess.run(
        [str(PTXAS), "-v", "-arch=sm_90a", str(ptx), "-o", str(tmp / "k.cubin")],
        capture_output=True,
        text=True,
    ).stderr
    regs = re.search(r"Used (\d+) registers", info)
    spill = re.search(r"(\d+) bytes spill stores", info)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_bytes": int(spill.group(1)) if spill else None,
        "shared_bytes": k.metadata.shared,
        "wgmma": k.asm["ptx"].count("wgmma.mma_async"),
        "tma_loads": k.asm["ptx"].count("cp.async.bulk.tensor"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, configs in (("pointer", flash_triton._CONFIGS), ("tma", flash_tma._CONFIGS)):
            for c in configs:
                bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
                for flat in (True, False) if variant == "tma" else (None,):
                    src = _pointer_source(bm, bn) if flat is None else _tma_source(bm, bn, flat)
                    row = {"variant": variant, "BLOCK_M": bm, "BLOCK_N": bn, "warps": c.num_warps}
                    row |= {"stages": c.num_stages, **({} if flat is None else {"one_image": flat})}
                    try:
                        row |= _compile(src, c.num_warps, c.num_stages, Path(tmp))
                    except Exception as e:  # noqa: BLE001 - reported per config
                        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
