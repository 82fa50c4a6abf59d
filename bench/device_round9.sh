#!/usr/bin/env bash
# Issue 26's first call of 2026-12-07 (night): where the fp8 attention kernel's NaN rows come from
# (bench/fp8_debug.py: every config, the second product in fp16, QK^T's second part 64 channels wide, each row's
# final max and sum), then — only where every config with QK_WIDE (else PV_FP16) is finite and within 0.15 of
# the fp8 math in torch on both shapes — that switch made the kernel's default on this copy (the same
# one-line change is committed after the run), then `newbie bench speed` with every section in the time left.
# Run from the repo root with .whl carried:   bash bench/device_round9.sh [seconds for the call, default 580]
set -uo pipefail
LIMIT="${1:-580}"
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl/peers/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
echo "[$SECONDS s] fp8 debug"
timeout 120 python3 bench/fp8_debug.py > "$OUT/fp8-debug.json" 2> >(tail -3 >&2)
python3 - "$OUT/fp8-debug.json" <<'PY'
import json, re, sys
from pathlib import Path
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("no debug JSON:", e); sys.exit(0)
fixes = {"qk_wide": True, "pv_fp16": True}
seen = {"qk_wide": 0, "pv_fp16": 0}
for run in d["runs"]:
    for name, r in run["configs"].items():
        brief = r if isinstance(r, str) else {k: r.get(k) for k in ("nonfinite", "rows_mod_16", "bad_rows_m_nonfinite",
            "bad_rows_l_zero_or_nonfinite", "rel_vs_ref")}
        print(run["shape"], name, brief)
        flags = name.split("/")[3:]
        if len(flags) == 1:
            seen[flags[0]] += 1
            fixes[flags[0]] &= isinstance(r, dict) and r["nonfinite"] == 0 and (r["rel_vs_ref"] or 1) < 0.15
print("fixes every config:", fixes)
pick = next((f for f in ("qk_wide", "pv_fp16") if fixes[f] and seen[f] >= 10), None)
if pick:
    p = Path("src/newbie/model/flash_triton.py")
    s = p.read_text()
    s2 = s.replace(f"{pick.upper()}: tl.constexpr = False", f"{pick.upper()}: tl.constexpr = True")
    p.write_text(s2)
    print(pick.upper(), "made the default here:", s2 != s)
else:
    print("no single switch fixes every config: the kernel is left as committed")
PY
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
echo "[$SECONDS s] speed"
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s $(( LIMIT - SECONDS - 20 )) --out "$OUT" \
  --skip "${SPEED_SKIP:-}" 2>&1 | tail -60
echo "[$SECONDS s] done"
