#!/usr/bin/env bash
# One device call for issue 23's VAE: our AutoencoderKL against diffusers' at the FLUX VAE's full size
# (bench/vae_check.py), writing vae-check-<device>-<date>.json into $OUT.
#
# The GPU machine has no diffusers: carry its wheel in the git-ignored .whl/ folder, e.g.
#   pip download --no-deps -d .whl diffusers
# and pass carry=[".whl"]. Without it only our VAE is timed (the JSON says why).
#
#   bash bench/device_vae.sh [--compile]
set -euo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
export OUT="${OUT:-bench/results}"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
python3 bench/vae_check.py "$@"
