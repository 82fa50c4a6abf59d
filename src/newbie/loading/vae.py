"""Loading the FLUX.1 16-channel AutoencoderKL (diffusers folder layout, or one file in BFL/LDM or diffusers
key names, e.g. ComfyUI's ae.safetensors), strictly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from newbie.config import VAEConfig
from newbie.errors import CheckpointError
from newbie.loading import comfy
from newbie.loading.safetensors_io import component_files, load_tensors, meta_tensors, read_headers
from newbie.loading.strict import check_keys, load_strict
from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL


def _vae_config(folder: Path) -> dict:
    if folder.is_file():  # a single file: its sidecar config, else the FLUX.1 VAE's
        return comfy.vae_config_for_file(folder)[0]
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable VAE config ({e})") from None


def _empty_model(folder: Path, raw: dict) -> AutoencoderKL:
    """The model of `raw` with its parameters on the meta device (filled by an assign-load)."""
    try:
        cfg = AutoencoderConfig.from_dict(raw)
    except ValueError as e:
        where = folder / "config.json" if folder.is_dir() else folder
        raise CheckpointError(f"{where}: {e}") from None
    with torch.device("meta"):
        return AutoencoderKL(cfg)


def _diffusers_names(model, headers: dict, where: str) -> dict[str, str]:
    """file key -> diffusers key: diffusers names kept; BFL/LDM names (ae.safetensors) mapped, after checking
    the file against `model` so that problems are named in the file's own (BFL) key names."""
    if not comfy.is_bfl_vae(headers):
        return {k: k for k in headers}
    comfy.check_bfl_vae_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, headers, where)
    return comfy.bfl_vae_names(headers)


def check_vae(folder: Path, headers: dict) -> None:
    model = _empty_model(folder, _vae_config(folder))
    names = _diffusers_names(model, headers, str(folder))
    renamed = {names[k]: {"shape": comfy.bfl_attention_shape(k, h["shape"])} for k, h in headers.items()}
    check_keys(model, meta_tensors(renamed), str(folder), "VAE")


def read_vae(folder: Path, dtype: torch.dtype = torch.float32, device="cpu") -> tuple[dict, dict]:
    """The VAE's file headers and tensors read onto `device` under the file's names (in a reader thread
    while the main one builds the other components)."""
    files = component_files(folder)
    headers = read_headers(files)  # damaged files fail here with the file named
    return headers, load_tensors(files, dtype=dtype, device=device)


def build_vae(folder: Path, read: tuple[dict, dict], device="cpu"):
    headers, tensors = read
    raw = _vae_config(folder)
    cfg = VAEConfig(
        latent_channels=int(raw.get("latent_channels", 16)),
        scaling_factor=float(raw.get("scaling_factor", VAEConfig.scaling_factor)),
        shift_factor=float(raw.get("shift_factor") or 0.0),
        downscale=2 ** (len(raw.get("block_out_channels", [0, 0, 0, 0])) - 1),
    )
    model = _empty_model(folder, raw)
    names = _diffusers_names(model, headers, str(folder))
    sd = {names[k]: t.reshape(comfy.bfl_attention_shape(k, tuple(t.shape))) for k, t in tensors.items()}
    load_strict(model, sd, str(folder), "VAE")
    return model.to(device).eval().requires_grad_(False), cfg


def load_vae(folder: Path, dtype: torch.dtype = torch.float32, device="cpu"):
    return build_vae(folder, read_vae(folder, dtype, device), device)
