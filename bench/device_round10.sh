#!/usr/bin/env bash
# The short form of bench/device_round9.sh for a call with three minutes or so: the fp8 kernel's diagnosis
# (bench/fp8_debug.py, written after every variant), the switch that fixes it made the default where one does
# (bench/fp8_pick.py), then the fp8 kernel against cuDNN at the DiT's shapes (bench/fp8_attention_quick.py).
# No wheels needed.   bash bench/device_round10.sh
set -uo pipefail
OUT="${OUT:-bench/results}"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
echo "[$SECONDS s] fp8 debug"
timeout "${DEBUG_S:-100}" python3 bench/fp8_debug.py "$OUT/fp8-debug.json" 2>&1 | tail -3
python3 bench/fp8_pick.py "$OUT/fp8-debug.json"
echo "[$SECONDS s] fp8 attention"
timeout 80 python3 bench/fp8_attention_quick.py > "$OUT/fp8-attention.json" 2> >(tail -3 >&2)
cat "$OUT/fp8-attention.json"
echo "[$SECONDS s] done"
