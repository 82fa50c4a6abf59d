#!/usr/bin/env bash
# The session's last device minutes (2026-12-07 evening), most important first: `newbie generate --vram 8GB`
# at full size (the pinned arenas of newbie.memory.arena on a real GPU, and their load time) and `--compile`
# cold and warm (PyTorch's backends only, length-generic blocks, one warm-up request), then where the fp8
# kernel's NaNs come from (bench/fp8_debug.py), then Gemma's decode section (plain graph and compiled step,
# single-query attention) in whatever time is left. No wheels needed.   bash bench/device_round8.sh
set -uo pipefail
OUT="${OUT:-bench/results}"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
echo "[$SECONDS s] startup"
mkdir -p "$OUT/startup"
timeout 170 python3 -m newbie bench startup --model /tmp/newbie-full --out "$OUT/startup" --timeout-s 100 \
  --sections vram,compile --budget-s 165 2>&1 | tail -4
python3 - "$OUT" <<'PY'
import glob, json, sys
d = json.load(open(glob.glob(sys.argv[1] + "/startup/startup-*.json")[0]))
for k in ("cli_vram8_s", "cli_compiled_cold_s", "cli_compiled_warm_s"):
    print(k, d.get(k), d.get(k[:-2] + "_phases"))
PY
echo "[$SECONDS s] fp8 debug"
timeout 45 python3 bench/fp8_debug.py > "$OUT/fp8-debug.json" 2> >(tail -3 >&2); tail -c 1200 "$OUT/fp8-debug.json"
echo "[$SECONDS s] llm"
TORCHINDUCTOR_CACHE_DIR=/tmp/ind-llm timeout 110 python3 bench/llm_speed.py --section --decoders compiled \
  --out "$OUT/llm-decode.json" 2>&1 | grep -v "^USDT" | grep "llm_tokens_per_s\|error" | tail -3
echo "[$SECONDS s] done"
