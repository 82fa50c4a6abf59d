"""Writing a loaded model in ComfyUI's layout: one file per component in a ComfyUI models/ folder, named as the
official template names them, each with its config beside it as <name>.config.json (and the transformer with
the model's sampling defaults as <name>.newbie_spec.json), read back by newbie.loading.folder.locate.

Keys: the transformer's official names; Gemma `model.*` with its SentencePiece model embedded as
`spiece_model`; Jina CLIP's original flash names under `model.` with its SentencePiece model; the VAE in
BFL/LDM names (loading.comfy's maps, inverted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from newbie.errors import NewbieError
from newbie.loading.comfy import SIDECAR_SUFFIX, diffusers_vae_key
from newbie.loading.spiece import MODEL_FILES, SPIECE_KEY, spiece_bytes
from newbie.loading.writer import _JINA_TO_FLASH, dit_config_json, gemma_config_json, jina_config_json

FILES = {
    "transformer": "diffusion_models/NewBie-Image-Exp0.1-bf16.safetensors",
    "text_encoder": "text_encoders/gemma_3_4b_it_bf16.safetensors",
    "clip_model": "text_encoders/jina_clip_v2_bf16.safetensors",
    "vae": "vae/ae.safetensors",
}


def find_spiece(sources: list[Path], what: str) -> bytes:
    """The SentencePiece model behind a tokenizer: a ComfyUI file's embedded one, or a folder's model file."""
    for src in sources:
        if src.is_file():
            return spiece_bytes(src)
        for name in MODEL_FILES[what]:
            if (src / name).is_file():
                return (src / name).read_bytes()
    raise NewbieError(
        f"the ComfyUI layout embeds each text encoder's SentencePiece model, and the {what} tokenizer in "
        f"{', '.join(str(s) for s in sources if s.exists())} has none ({' or '.join(MODEL_FILES[what])}); "
        "convert to a folder instead"
    )


def _tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8)


def _sd(module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {
        k: (v.to(dtype) if dtype else v).detach().contiguous().cpu() for k, v in module.state_dict().items()
    }


def jina_comfy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Native Jina names (model/jina.py) -> ComfyUI's (the original flash names, q/k/v fused)."""
    out = {}
    for k, v in sd.items():
        if ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            continue
        if ".self_attn.q_proj." in k:
            v = torch.cat([sd[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")])
            k = k.replace("self_attn.q_proj", "mixer.Wqkv")
        for pattern, repl in _JINA_TO_FLASH:
            k = re.sub(pattern, repl, k)
        out["model." + k] = v.contiguous()
    return out


def vae_bfl_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in BFL/LDM names (the FLUX ae.safetensors layout)."""
    n_up = len({k.split(".")[2] for k in sd if k.startswith("decoder.up_blocks.")})
    out = {}
    for k, v in sd.items():
        name = diffusers_vae_key(k, n_up)
        if re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", name):
            v = v[:, :, None, None]  # 1x1 convolutions in the BFL autoencoder
        out[name] = v.contiguous()
    return out


def _sidecar(path: Path, config: dict, suffix: str = SIDECAR_SUFFIX) -> None:
    path.with_name(path.name.removesuffix(".safetensors") + suffix).write_text(json.dumps(config, indent=2))


def save_comfy(models: Path, pipe, dtypes: dict[str, torch.dtype | None], spec: dict) -> dict[str, Path]:
    """Write `pipe`'s four components into the ComfyUI models/ folder `models`; dtypes: per component (None:
    as loaded); spec: the newbie_spec.json content that travels beside the transformer. Returns the paths."""
    gemma_proto = find_spiece(pipe.folder.gemma_tokenizer_dirs, "Gemma")
    jina_proto = find_spiece(pipe.folder.clip_tokenizer_dirs, "Jina")
    files = {name: models / rel for name, rel in FILES.items()}
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    dit_sd = _sd(pipe.dit, dtypes["transformer"])
    save_file(dit_sd, str(files["transformer"]))
    _sidecar(files["transformer"], dit_config_json(pipe.dit.cfg))
    _sidecar(files["transformer"], spec, ".newbie_spec.json")
    gemma = {"model." + k: v for k, v in _sd(pipe.text.gemma, dtypes["text_encoder"]).items()}
    save_file({**gemma, SPIECE_KEY: _tensor(gemma_proto)}, str(files["text_encoder"]))
    _sidecar(files["text_encoder"], gemma_config_json(pipe.text.gemma))
    jina = jina_comfy_keys(_sd(pipe.text.jina, dtypes["clip_model"]))
    save_file({**jina, SPIECE_KEY: _tensor(jina_proto)}, str(files["clip_model"]))
    _sidecar(files["clip_model"], jina_config_json(pipe.text.jina))
    save_file(vae_bfl_keys(_sd(pipe.codec.vae, dtypes["vae"])), str(files["vae"]))
    _sidecar(files["vae"], pipe.codec.vae.config.to_dict())
    return files
