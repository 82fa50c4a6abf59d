#!/usr/bin/env bash
# One short device call for Gemma's decode speed (prompt expansion): a random full-size Gemma3-4B text model
# (bench/llm_speed.py builds it; no pipeline, no checkpoint on disk), the speed bench's Gemma section on it
# (newbie.bench.llm_tokens: the plain graph and the compiled decoder, the bandwidth bound, the kernel profiles
# of one eager and one compiled step), then the whole expansion loop with each decoder kind; last, a decode
# step's attention alone (bench/decode_attention.py: SDPA against the plain math, eager and compiled).
# Run from the repo root with .whl carried:   bash bench/device_llm.sh [seconds, default 540]
set -uo pipefail
shopt -s nullglob
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/newbie-inductor-llm}"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
timeout "${1:-540}" python3 bench/llm_speed.py --section --decoders auto,compiled \
  --out "${OUT:-bench/results}/llm-decode-$(date +%F).json" 2>&1 | grep -v "^USDT" | tail -60
left=$(( ${1:-540} + 40 - SECONDS ))  # what the call has left (its limit is 600 s): at most 120 s of it
(( left > 120 )) && left=120
if (( left >= 30 )); then
  timeout "$left" python3 bench/decode_attention.py --json "${OUT:-bench/results}/decode-attention-$(date +%F).json" \
    2>&1 | grep -v "^USDT" | tail -20
else
  echo "decode_attention.py: not run, ${left} s left"
fi
