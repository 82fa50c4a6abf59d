#!/usr/bin/env bash
# One device call for issue 23 (first picture fast): a random full-size checkpoint in the real layout, then
# `newbie bench startup` writing bench/results/startup-<device>-<date>.json into $OUT.
#
# Wheels: the GPU machine has no diffusers (the VAE loader and the Lumina2 peer need it) nor fastapi/uvicorn
# (`newbie serve`). Carry them in the git-ignored .whl/ folder, e.g. here:
#   pip download --no-deps -d .whl diffusers fastapi uvicorn starlette h11 anyio sniffio pydantic pydantic-core
# and pass carry=[".whl"]. Without .whl/ the script goes on; each section that needs a missing package records why.
#
#   bash bench/device_startup.sh [seconds for the whole call, default 570]
set -euo pipefail
LIMIT="${1:-570}"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
OUT="${OUT:-bench/results}"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
df -h /tmp | tail -1
if [ ! -f /tmp/newbie-full/vae/config.json ]; then
  python3 -m newbie.bench.random_checkpoint /tmp/newbie-full | tail -1 | tee "$OUT/startup-checkpoint-write.json"
fi
# the rest of the call for the bench, less a margin for writing the JSON back
python3 -m newbie bench startup --model /tmp/newbie-full --out "$OUT" --timeout-s 240 \
  --budget-s $(( LIMIT - SECONDS - 15 ))
