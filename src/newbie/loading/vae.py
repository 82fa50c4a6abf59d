"""Loading the FLUX.1 16-channel AutoencoderKL (diffusers folder layout), strictly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from newbie.config import VAEConfig
from newbie.errors import CheckpointError
from newbie.loading.safetensors_io import load_tensors, read_headers, weight_files
from newbie.loading.strict import build_empty, check_keys, load_strict


def autoencoder_class():
    """diffusers' AutoencoderKL, imported without its notice about optional torchao serialization types."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        from diffusers import AutoencoderKL
    finally:
        diffusers_logging.set_verbosity(level)
    return AutoencoderKL


def _vae_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable VAE config ({e})") from None


def check_vae(folder: Path, headers: dict) -> None:
    from newbie.loading.folder import meta_tensors

    AutoencoderKL = autoencoder_class()

    raw = _vae_config(folder)
    check_keys(build_empty(lambda: AutoencoderKL.from_config(raw), "meta"), meta_tensors(headers), str(folder), "VAE")


def load_vae(folder: Path, dtype: torch.dtype = torch.float32, device="cpu"):
    AutoencoderKL = autoencoder_class()

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable VAE config ({e})") from None
    cfg = VAEConfig(
        latent_channels=int(raw.get("latent_channels", 16)),
        scaling_factor=float(raw.get("scaling_factor", VAEConfig.scaling_factor)),
        shift_factor=float(raw.get("shift_factor") or 0.0),
        downscale=2 ** (len(raw.get("block_out_channels", [0, 0, 0, 0])) - 1),
    )
    files = weight_files(folder)
    read_headers(files)  # damaged files fail here with the file named
    model = build_empty(lambda: AutoencoderKL.from_config(raw), device)
    sd = load_tensors(files, dtype=dtype, device=device)
    load_strict(model, sd, str(folder), "VAE")
    return model.to(device).eval().requires_grad_(False), cfg
