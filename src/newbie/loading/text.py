"""Loading Gemma3 (text_encoder/) and the Jina CLIP v2 text tower (clip_model/) natively, strictly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from newbie.errors import CheckpointError
from newbie.loading import comfy
from newbie.loading.safetensors_io import component_files, load_tensors, meta_tensors, read_headers
from newbie.loading.strict import check_keys, load_strict
from newbie.model.gemma import Gemma, GemmaConfig
from newbie.model.jina import JinaConfig, JinaTextModel

# Where the Gemma text decoder sits inside the saved model: Gemma3ForConditionalGeneration (original and
# transformers-5 spellings), Gemma3ForCausalLM, or a bare Gemma3TextModel.
GEMMA_PREFIXES = ("language_model.model.", "model.language_model.", "language_model.", "model.", "")
# Parts of a multimodal Gemma folder that text encoding never uses.
GEMMA_UNUSED = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector)\.|^lm_head\.")

# Jina CLIP v2 keeps its XLM-RoBERTa text tower under one of these prefixes.
JINA_PREFIXES = (
    "text_model.transformer.roberta.",
    "text_model.transformer.",
    "roberta.",
    "model.",
    "",
)  # model.: ComfyUI
# original (flash) XLM-RoBERTa names -> the native ones (transformers' JinaEmbeddingsV3Model, model/jina.py)
JINA_RENAMES = [
    (r"^emb_ln\.", "embeddings.LayerNorm."),
    (r"^encoder\.layers\.", "layers."),
    (r"\.mixer\.out_proj\.", ".self_attn.o_proj."),
    (r"\.norm1\.", ".post_attention_layernorm."),
    (r"\.norm2\.", ".post_mlp_layernorm."),
]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from None


def _find_prefix(keys, prefixes, anchor: str, where: str) -> str:
    for p in prefixes:
        if p + anchor in keys:
            return p
    raise CheckpointError(
        f"{where}: no '{anchor}' under any known prefix ({', '.join(p or '<none>' for p in prefixes)})"
    )


def _config_path(path: Path) -> Path | None:
    """A folder's config.json; for a single file its sidecar, or None (the config then comes from shapes)."""
    return comfy.sidecar_config(path) if path.is_file() else path / "config.json"


def gemma_text_config(path: Path, headers: dict | None = None, prefix: str = "model.") -> GemmaConfig:
    cfg_path = _config_path(path)
    if cfg_path is None:
        return GemmaConfig.from_dict(comfy.gemma3_fields(headers or {}, prefix, str(path)), str(path))
    raw = _read_json(cfg_path)
    text = raw.get("text_config", raw) if raw.get("model_type") != "gemma3_text" else raw
    return GemmaConfig.from_dict(text, str(cfg_path))


def _gemma_plan(folder: Path, headers: dict) -> tuple[str, set[str]]:
    prefix = _find_prefix(headers, GEMMA_PREFIXES, "embed_tokens.weight", str(folder))
    keys = {k for k in headers if k.startswith(prefix) and not GEMMA_UNUSED.match(k)}
    return prefix, keys


def _empty_gemma(path: Path, headers: dict, prefix: str) -> Gemma:
    cfg = gemma_text_config(path, headers, prefix)
    with torch.device("meta"):  # parameters filled by an assign-load; it holds no buffers
        return Gemma(cfg)


def check_gemma(folder: Path, headers: dict) -> None:
    prefix, keys = _gemma_plan(folder, headers)
    sd = {k[len(prefix) :]: v for k, v in meta_tensors(headers, keys).items()}
    check_keys(_empty_gemma(folder, headers, prefix), sd, str(folder), "Gemma3 text encoder")


def read_gemma(folder: Path, dtype: torch.dtype, device="cpu") -> tuple[dict, str, dict]:
    """The Gemma weights read onto `device` (headers, prefix, state dict): safetensors only, no transformers,
    so that it can run while another thread imports transformers."""
    files = component_files(folder)
    headers = read_headers(files)
    prefix, keys = _gemma_plan(folder, headers)
    sd = {k[len(prefix) :]: v for k, v in load_tensors(files, keys=keys, dtype=dtype, device=device).items()}
    return headers, prefix, sd


def build_gemma(folder: Path, read: tuple[dict, str, dict], device="cpu"):
    headers, prefix, sd = read
    model = _empty_gemma(folder, headers, prefix)
    load_strict(model, sd, str(folder), "Gemma3 text encoder")
    return model.to(device).eval().requires_grad_(False)


def load_gemma(folder: Path, dtype: torch.dtype, device="cpu"):
    """Our Gemma3 text decoder (model/gemma.py) from any Gemma3 folder layout or a ComfyUI single file;
    every decoder weight must be present."""
    return build_gemma(folder, read_gemma(folder, dtype, device), device)


def jina_config(path: Path, headers: dict | None = None, prefix: str = "model.") -> JinaConfig:
    """A native jina_embeddings_v3 config, or jina-clip's text_config overrides on the v3 defaults
    (a ComfyUI file without a sidecar config: the widths from its shapes)."""
    cfg_path = _config_path(path)
    if cfg_path is None:
        fields = comfy.jina_fields(headers or {}, prefix, str(path))
    else:
        raw = _read_json(cfg_path)
        if raw.get("model_type") == "jina_embeddings_v3":
            fields = raw
        else:
            fields = (raw.get("text_config") or {}).get("hf_model_config_kwargs") or {}
    try:
        return JinaConfig.from_fields(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path or path}: bad Jina CLIP config ({e})") from None


def jina_state_dict(raw: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Jina CLIP text-tower tensors -> native names. LoRA task adapters are dropped: pooled text features
    are computed without them (spec §3.3)."""
    sd: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        name = k[len(prefix) :]
        if ".parametrizations." in name:
            if not name.endswith(".parametrizations.weight.original"):
                continue  # lora_A / lora_B
            name = name.replace(".parametrizations.weight.original", ".weight")
        for pattern, repl in JINA_RENAMES:
            name = re.sub(pattern, repl, name)
        if ".mixer.Wqkv." in name:
            for part, t in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                sd[name.replace("mixer.Wqkv", f"self_attn.{part}")] = t.contiguous()
            continue
        if name.startswith("pooler."):
            continue
        sd[name] = v
    return sd


def _jina_plan(folder: Path, headers: dict) -> tuple[str, set[str]]:
    anchor = "embeddings.word_embeddings.weight"
    if not any(k.endswith(anchor) for k in headers):
        anchor = "embeddings.word_embeddings.parametrizations.weight.original"
    prefix = _find_prefix(headers, JINA_PREFIXES, anchor, str(folder))
    keys = {k for k in headers if k.startswith(prefix)}
    if prefix == "":  # a bare tower: the CLIP parts are foreign
        keys = {
            k for k in headers if not k.startswith(("vision_model.", "visual_projection", "text_projection"))
        }
    return prefix, keys


def _empty_jina(path: Path, headers: dict, prefix: str) -> JinaTextModel:
    """Parameters on meta, filled by an assign-load; the RoPE table is built for real (model/jina.py)."""
    cfg = jina_config(path, headers, prefix)
    with torch.device("meta"):
        return JinaTextModel(cfg)


def check_jina(folder: Path, headers: dict) -> None:
    prefix, keys = _jina_plan(folder, headers)
    sd = jina_state_dict(meta_tensors(headers, keys), prefix)
    check_keys(_empty_jina(folder, headers, prefix), sd, str(folder), "Jina CLIP text tower")


def read_jina(folder: Path, dtype: torch.dtype, device="cpu") -> tuple[dict, str, dict]:
    """The Jina text tower's weights read onto `device` under native names; no transformers (see read_gemma)."""
    files = component_files(folder)
    headers = read_headers(files)
    prefix, keys = _jina_plan(folder, headers)
    return (
        headers,
        prefix,
        jina_state_dict(load_tensors(files, keys=keys, dtype=dtype, device=device), prefix),
    )


def build_jina(folder: Path, read: tuple[dict, str, dict], device="cpu"):
    headers, prefix, sd = read
    model = _empty_jina(folder, headers, prefix)
    load_strict(model, sd, str(folder), "Jina CLIP text tower")
    return model.to(device).eval().requires_grad_(False)


def load_jina(folder: Path, dtype: torch.dtype, device="cpu"):
    return build_jina(folder, read_jina(folder, dtype, device), device)


def load_tokenizer(folders: list[Path], what: str):
    """newbie.loading.tokenizer.Tokenizer from the first folder holding tokenizer files (tokenizer.json, else a
    SentencePiece model), or a ComfyUI file's embedded SentencePiece model (`what`: "Gemma" or "Jina" picks
    its conversion and special tokens). Never runs remote code, never imports transformers."""
    from newbie.loading import spiece
    from newbie.loading.tokenizer import from_folder

    convert = spiece.gemma_tokenizer if what == "Gemma" else spiece.jina_tokenizer
    for folder in folders:
        if folder.is_file():
            return spiece.file_tokenizer(folder, what)
        if (folder / "tokenizer.json").is_file():
            return from_folder(folder)
        for name in spiece.MODEL_FILES[what]:
            if (folder / name).is_file():
                return convert((folder / name).read_bytes(), str(folder / name))
    raise CheckpointError(f"no {what} tokenizer found in {' or '.join(str(f) for f in folders)}")
