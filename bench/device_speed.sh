#!/usr/bin/env bash
# One device call for `newbie bench speed` (issues 15, 26): the carried wheels, a random full-size checkpoint
# (bench/gpu_check.py's), then the bench within a budget that leaves room to write the JSON back. Run from the
# repo root with .whl carried:   bash bench/device_speed.sh [budget seconds, default 510]
# .whl/*.whl: diffusers (the Lumina2 peer) and the server's pure-Python needs; .whl/peers/*.whl: cache-dit 1.5.3
# and torchao 0.18.0 (cache-dit's fp8 quantizes only through torchao), installed here alone so that no other
# device script imports torchao. Without them the cache-dit peers are named "not run" with the reason.
set -euo pipefail
shopt -s nullglob
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl .whl/peers/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from gpu_check import write_full_size; write_full_size(Path('/tmp/newbie-full'))" | tail -1
python3 -m newbie bench speed --model /tmp/newbie-full --budget-s "${1:-510}" --out "${OUT:-bench/results}"
