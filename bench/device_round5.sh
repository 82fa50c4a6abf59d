#!/usr/bin/env bash
# One device call for the 2026-12-07 afternoon round (issues 23 and 26), in the order the time allows:
# a random full-size checkpoint (newbie.bench.random_checkpoint), our attention kernels checked and timed
# (bench/attention_kernel.py), the startup sections that need no compile (`newbie bench startup`), then
# `newbie bench speed` in the time left. Run from the repo root with .whl carried (diffusers, fastapi + uvicorn
# and their needs in .whl/, cache-dit + torchao in .whl/peers/, installed only before the speed bench):
#   bash bench/device_round5.sh [seconds for the whole call, default 580] [startup sections]
# (env: KERNELS=0 skips the kernel check, STARTUP_BUDGET the startup bench's seconds, SPEED_SKIP its skip list)
set -uo pipefail
LIMIT="${1:-580}"
STARTUP="${2:-read,import,load,cli,serve,vram}"
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
echo "[$SECONDS s] kernels"
[ "${KERNELS:-1}" = 0 ] || timeout 80 python3 bench/attention_kernel.py --json "$OUT/attention-kernel.json" 2>&1 | grep -v "^  \|^Traceback" | tail -20
echo "[$SECONDS s] startup"
SB="${STARTUP_BUDGET:-200}"
timeout $(( SB + 60 )) python3 -m newbie bench startup --model /tmp/newbie-full --out "$OUT" --timeout-s 120 \
  --sections "$STARTUP" --budget-s "$SB" 2>&1 | tail -25
echo "[$SECONDS s] speed"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/peers/*.whl
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s $(( LIMIT - SECONDS - 25 )) --out "$OUT" \
  --skip "${SPEED_SKIP:-compile_warm,sizes,step_cache_binding,diffusers_compiled,cache_dit_fp8}" 2>&1 | tail -40
