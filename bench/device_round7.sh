#!/usr/bin/env bash
# The 2026-12-07 evening's last call: what changed after device_startup.sh + device_round6.sh ran, most
# important first — the fp8 kernel's NaNs located config by config (bench/fp8_debug.py); the startup bench's
# compile (cold/warm: PyTorch's backends only, length-generic blocks, one warm-up) and --vram 8GB (pinned
# arenas) sections; Gemma's decode with the single-query attention path (bench/device_llm.sh); pinning alone
# (bench/pin_check.py). Run from the repo root with .whl carried:   bash bench/device_round7.sh
set -uo pipefail
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
echo "[$SECONDS s] fp8 debug"
timeout 60 python3 bench/fp8_debug.py > "$OUT/fp8-debug.json" 2> >(tail -5 >&2); tail -c 1200 "$OUT/fp8-debug.json"
echo "[$SECONDS s] checkpoint"
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
echo "[$SECONDS s] startup"
mkdir -p "$OUT/startup"
timeout 170 python3 -m newbie bench startup --model /tmp/newbie-full --out "$OUT/startup" --timeout-s 110 \
  --sections "${STARTUP:-compile,vram}" --budget-s 160 2>&1 | tail -6
echo "[$SECONDS s] llm"
OUT="$OUT" timeout 140 bash bench/device_llm.sh 130 2>&1 | tail -22
echo "[$SECONDS s] pin check"
timeout 80 python3 bench/pin_check.py --gb 7 2>&1 | tail -c 1500
echo "[$SECONDS s] done"
