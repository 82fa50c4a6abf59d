#!/usr/bin/env bash
# Issue 26's full speed call (written 2026-12-07 night; no machine could be started for it that session): the
# fp8 kernel's diagnosis (bench/fp8_debug.py), then `newbie bench speed` with every section in the time left.
# Run from the repo root with .whl carried:   bash bench/device_round9.sh [seconds for the call, default 580]
# (env SPEED_SKIP: the speed bench's skip list)
set -uo pipefail
LIMIT="${1:-580}"
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl/peers/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
echo "[$SECONDS s] fp8 debug"
timeout 120 python3 bench/fp8_debug.py "$OUT/fp8-debug.json" 2>&1 | tail -3
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
echo "[$SECONDS s] speed"
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s $(( LIMIT - SECONDS - 20 )) --out "$OUT" \
  --skip "${SPEED_SKIP:-}" 2>&1 | tail -60
echo "[$SECONDS s] done"
