"""Writing a model folder in the official NewBie layout and key names (spec §1.1).

Used by the tests (tiny checkpoints), the random-weight fallback demo and the demo-model trainer, so that
everything we ship is read back by the same loader that reads the real checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from newbie.config import DiTConfig
from newbie.model.dit import NextDiT

GEMMA_SAVE_PREFIX = "language_model.model."  # google's Gemma3ForConditionalGeneration layout
JINA_SAVE_PREFIX = "text_model.transformer.roberta."


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def dit_config_json(cfg: DiTConfig) -> dict:
    # The keys the team's converter writes, plus the ones it leaves to code defaults.
    return {
        "_class_name": "NextDiT_3B_GQA_patch2_Adaln_Refiner_WHIT_CLIP",
        "model_type": "nextdit_clip",
        "patch_size": cfg.patch_size,
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "n_refiner_layers": cfg.n_refiner_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "in_channels": cfg.in_channels,
        "axes_dims": list(cfg.axes_dims),
        "axes_lens": list(cfg.axes_lens),
        "clip_text_dim": cfg.clip_text_dim,
        "clip_img_dim": cfg.clip_text_dim,
        "cap_feat_dim": cfg.cap_feat_dim,
        "qk_norm": True,
        "multiple_of": cfg.multiple_of,
        "ffn_dim_multiplier": cfg.ffn_dim_multiplier,
        "norm_eps": cfg.norm_eps,
    }


def save_dit(
    folder: Path, dit: NextDiT, dtype: torch.dtype | None = None, with_norm_final: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if dtype else v) for k, v in dit.state_dict().items()}
    if with_norm_final:  # present in the official file though never used
        sd["norm_final.weight"] = torch.ones(dit.cfg.dim, dtype=dtype or next(dit.parameters()).dtype)
    save_file(_contiguous(sd), str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dit_config_json(dit.cfg), indent=2))


def save_gemma(folder: Path, gemma, tokenizer, prefix: str = GEMMA_SAVE_PREFIX, dtype=None) -> None:
    """A Gemma3 text decoder saved as the text part of a Gemma3ForConditionalGeneration folder."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {prefix + k: (v.to(dtype) if dtype else v) for k, v in gemma.state_dict().items()}
    save_file(_contiguous(sd), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(gemma_config_json(gemma), indent=2))
    tokenizer.save_pretrained(str(folder))


def gemma_config_json(gemma) -> dict:
    """A Gemma3 text decoder's config (GemmaConfig.to_dict) as the text part of a Gemma3ForConditionalGeneration
    config.json, which transformers reads."""
    text_cfg = gemma.config.to_dict()
    for k in ("architectures", "transformers_version", "_name_or_path"):
        text_cfg.pop(k, None)
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text_cfg,
    }


# native Jina names (model/jina.py) -> original XLM-RoBERTa flash names (inverse of loading/text.py)
_JINA_TO_FLASH = [
    (r"^embeddings\.LayerNorm\.", "emb_ln."),
    (r"^layers\.", "encoder.layers."),
    (r"\.self_attn\.o_proj\.", ".mixer.out_proj."),
    (r"\.post_attention_layernorm\.", ".norm1."),
    (r"\.post_mlp_layernorm\.", ".norm2."),
]


def save_jina(folder: Path, jina, tokenizer, lora_rank: int = 0, dtype=None) -> None:
    """A JinaTextModel saved like jina-clip-v2's text tower: flash names, fused Wqkv, weights as
    `parametrizations.weight.original` and (optionally) unused LoRA adapter tensors beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    native = {k: (v.to(dtype) if dtype else v) for k, v in jina.state_dict().items()}
    sd: dict[str, torch.Tensor] = {}
    for k, v in native.items():
        if ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            continue
        if ".self_attn.q_proj." in k:
            parts = [native[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            k, v = k.replace("self_attn.q_proj", "mixer.Wqkv"), torch.cat(parts, 0)
        for pattern, repl in _JINA_TO_FLASH:
            k = re.sub(pattern, repl, k)
        if k.endswith(".weight") and v.ndim == 2:  # Linear and Embedding weights carry parametrizations
            base = k[: -len(".weight")]
            sd[f"{base}.parametrizations.weight.original"] = v
            if lora_rank:
                sd[f"{base}.parametrizations.weight.0.lora_A"] = torch.randn(5, lora_rank, v.shape[1]) * 0.01
                sd[f"{base}.parametrizations.weight.0.lora_B"] = torch.randn(5, v.shape[0], lora_rank) * 0.01
        else:
            sd[k] = v
    save_file(
        _contiguous({JINA_SAVE_PREFIX + k: v for k, v in sd.items()}), str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(json.dumps(jina_config_json(jina), indent=2))
    tokenizer.save_pretrained(str(folder))


def jina_config_json(jina) -> dict:
    """A JinaTextModel's config as jina-clip-v2's config.json spells it."""
    c = jina.config
    return {
        "architectures": ["JinaCLIPModel"],
        "model_type": "jina_clip",
        "text_config": {
            "hf_model_name_or_path": "jinaai/jina-embeddings-v3",
            "embed_dim": c.hidden_size,
            "pooler_type": "mean_pooler",
            "proj_type": None,
            "hf_model_config_kwargs": {
                "use_flash_attn": False,
                "load_trained_adapters": False,
                "vocab_size": c.vocab_size,
                "hidden_size": c.hidden_size,
                "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads,
                "intermediate_size": c.intermediate_size,
                "rotary_emb_base": float(c.rope_theta),
                "pad_token_id": c.pad_token_id,
            },
        },
    }


def save_vae(folder: Path, vae) -> None:
    """The files diffusers' save_pretrained writes for an AutoencoderKL (model/autoencoder.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(vae.config.to_json())
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def write_model_index(root: Path) -> None:
    index = {
        "_class_name": "NewbiePipeline",
        "_diffusers_version": "0.30.0",
        "transformer": ["transformer", "NextDiT_3B_GQA_patch2_Adaln_Refiner_WHIT_CLIP"],
        "text_encoder": ["text_encoder", "Gemma3ForConditionalGeneration"],
        "tokenizer": ["text_encoder", "AutoTokenizer"],
        "clip_model": ["clip_model", "JinaCLIPModel"],
        "clip_tokenizer": ["clip_model", "AutoTokenizer"],
        "vae": ["vae", "AutoencoderKL"],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(index, indent=2))


def save_model(root: Path, dit, gemma, gemma_tokenizer, jina, jina_tokenizer, vae, dtype=None) -> None:
    write_model_index(root)
    save_dit(root / "transformer", dit, dtype)
    save_gemma(root / "text_encoder", gemma, gemma_tokenizer, dtype=dtype)
    save_jina(root / "clip_model", jina, jina_tokenizer, dtype=dtype)
    save_vae(root / "vae", vae)
