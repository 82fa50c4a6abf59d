#!/usr/bin/env bash
# The 2026-12-07 evening's speed call (issue 26), run right after bench/device_startup.sh on the same warm
# machine (its random checkpoint in /tmp/newbie-full is reused, else written): the attention kernels' GPU tests
# where pytest exists, then `newbie bench speed` — attention (cuDNN, our pointer and TMA bf16 kernels, fp8 with the
# quantization fused by inductor), the compiled bf16 and fp8 steps, the official images, diffusers eager, and
# Gemma's decode with the plain and the compiled decoder — in the time left. Run from the repo root with .whl
# carried:   bash bench/device_round6.sh [seconds for the whole call, default 575]
# (env SPEED_SKIP: the speed bench's skip list)
set -uo pipefail
LIMIT="${1:-575}"
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl/peers/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
[ -f /tmp/newbie-full/vae/config.json ] || python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1
if python3 -c "import pytest" 2>/dev/null; then
  echo "[$SECONDS s] GPU tests"
  timeout 120 python3 -m pytest tests/model/test_flash.py -q -p no:cacheprovider -k gpu 2>&1 | tail -8
fi
echo "[$SECONDS s] speed"
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s $(( LIMIT - SECONDS - 25 )) --out "$OUT" \
  --skip "${SPEED_SKIP:-compile_warm,sizes,step_cache_binding,diffusers_compiled,cache_dit_fp8}" \
  2>&1 | tail -45
