#!/usr/bin/env bash
# One device call for issue 26 (Speed III): our attention kernels checked and timed (bench/attention_kernel.py),
# then `newbie bench speed` in the time left (bench/device_speed.sh). Run from the repo root with .whl carried
# (diffusers for the peers, cache-dit + torchao for cache-dit's peer):
#   bash bench/device_round4.sh [seconds for the whole call, default 580]
set -uo pipefail
LIMIT="${1:-580}"
OUT="${OUT:-bench/results}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
timeout 150 python3 bench/attention_kernel.py --json "$OUT/attention-kernel.json" 2>&1 | grep -v "^  \|^Traceback" | tail -30
bash bench/device_speed.sh $(( LIMIT - SECONDS - 100 ))  # the checkpoint is written first (~40 s)
