#!/usr/bin/env bash
# Issue 26's full speed call (written 2026-12-07 night; no machine could be started for it that session): the
# fp8 kernel's diagnosis (bench/fp8_debug.py), then bench/device_round6.sh (the attention kernels' GPU tests,
# then `newbie bench speed`) in the time left, by default with every section but step_cache_binding (the demo
# table, measured on the CPU: bench/step_cache_policies.py).
# Run from the repo root with .whl carried:   bash bench/device_round9.sh [seconds for the call, default 580]
# (env SPEED_SKIP: the speed bench's skip list)
set -uo pipefail
LIMIT="${1:-580}"
OUT="${OUT:-bench/results}"
echo "[$SECONDS s] fp8 debug"
PYTHONPATH=$PWD/src timeout 120 python3 bench/fp8_debug.py "$OUT/fp8-debug.json" 2>&1 | tail -3
SPEED_SKIP="${SPEED_SKIP:-step_cache_binding}" bash bench/device_round6.sh $(( LIMIT - SECONDS ))
