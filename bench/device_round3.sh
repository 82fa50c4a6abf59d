#!/usr/bin/env bash
# One device call for 2026-12-07's round: LoRA training memory and speed (issue 25, bench/train_memory.py), then
# the startup bench (issue 23, bench/device_startup.sh) in the time left. Run from the repo root with .whl carried
# (diffusers, fastapi, uvicorn and their pure-Python needs; see device_startup.sh):
#   bash bench/device_round3.sh [seconds for the whole call, default 570]
set -uo pipefail
LIMIT="${1:-570}"
OUT="${OUT:-bench/results}"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 170 python3 bench/train_memory.py --out-dir "$OUT" 2>&1 | tail -25
bash bench/device_startup.sh $(( LIMIT - SECONDS ))
