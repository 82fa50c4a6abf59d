#!/usr/bin/env bash
# One device call for the TMA variant of the bf16 attention kernel (model/flash_tma.py): the GPU tests of
# tests/model/test_flash.py (where pytest is installed), then bench/attention_kernel.py (both variants checked at
# ragged lengths, two images and fused-qkv views; pointer vs TMA vs cuDNN timed at 4,352 and 16,640 tokens) into
# $OUT/attention-kernel-tma.json. Each new shape autotunes both kernels (7 + 14 configs): give it minutes.
#   bash bench/device_tma.sh
set -uo pipefail
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if python3 -c "import pytest" 2>/dev/null; then
  echo "[$SECONDS s] GPU tests"
  timeout 240 python3 -m pytest tests/model/test_flash.py -q -p no:cacheprovider -k gpu 2>&1 | tail -15
fi
echo "[$SECONDS s] kernel check and times"
timeout 420 python3 bench/attention_kernel.py --json "$OUT/attention-kernel-tma.json" 2>&1 | grep -v "^  " | tail -40
echo "[$SECONDS s] exit ${PIPESTATUS[0]}"
