#!/usr/bin/env bash
# One device call for issue 15: the carried wheels, a random full-size checkpoint (bench/gpu_check.py's), then
# `newbie bench speed` within a budget that leaves room to write the JSON back. Run from the repo root with
# .whl carried:   bash bench/device_speed.sh [budget seconds, default 500]
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from gpu_check import write_full_size; write_full_size(Path('/tmp/newbie-full'))" | tail -1
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s "${1:-500}" --out "${OUT:-bench/results}"
