#!/usr/bin/env bash
# A short call (2026-12-07 night, the session's only device call that started): the fp8 kernel's diagnosis
# (bench/fp8_debug.py, written after every variant), then the fp8 kernel against cuDNN at the DiT's shapes
# (bench/fp8_attention_quick.py). As it ran, a step between the two (a since-removed bench/fp8_pick.py) made
# P V in fp16 (PV_FP16) the kernel's default on the device's copy, the variant the diagnosis found finite in
# every config; that is the committed default since. No wheels needed.   bash bench/device_round10.sh
set -uo pipefail
OUT="${OUT:-bench/results}"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
echo "[$SECONDS s] fp8 debug"
timeout "${DEBUG_S:-100}" python3 bench/fp8_debug.py "$OUT/fp8-debug.json" 2>&1 | tail -3
echo "[$SECONDS s] fp8 attention"
timeout 80 python3 bench/fp8_attention_quick.py > "$OUT/fp8-attention.json" 2> >(tail -3 >&2)
cat "$OUT/fp8-attention.json"
echo "[$SECONDS s] done"
