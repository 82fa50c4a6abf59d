"""Writing a loaded model in the diffusers layout of the Disty0 conversion (spec §1.3): the transformer under
diffusers' Lumina2 key names with separate q/k/v and a Lumina2 config.json, the Jina CLIP text tower in
text_encoder_2/, tokenizers also in tokenizer/ and tokenizer_2/. The inverse of loading/dit.py's
DIFFUSERS_RENAMES, read back by the same loader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from newbie.config import DiTConfig

# official -> diffusers Lumina2 names, applied in order, each at most once (inverse of DIFFUSERS_RENAMES)
OFFICIAL_TO_DIFFUSERS = [
    (r"^cap_embedder\.", "time_caption_embed.caption_embedder."),
    (r"^t_embedder\.mlp\.0\.", "time_caption_embed.timestep_embedder.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "time_caption_embed.timestep_embedder.linear_2."),
    (r"^(clip_text_pooled_proj|time_text_embed)\.", r"time_caption_embed.\1."),
    (r"^final_layer\.adaLN_modulation\.1\.", "norm_out.linear_1."),
    (r"^final_layer\.linear\.", "norm_out.linear_2."),
    (r"\.attention\.out\.", ".attn.to_out.0."),
    (r"\.attention\.q_norm\.", ".attn.norm_q."),
    (r"\.attention\.k_norm\.", ".attn.norm_k."),
    (r"\.feed_forward\.w(\d)\.", r".feed_forward.linear_\1."),
    (r"\.adaLN_modulation\.1\.", ".norm1.linear."),
    (r"^(layers|noise_refiner)\.(\d+)\.attention_norm1\.", r"\1.\2.norm1.norm."),  # modulated: RMSNormZero
    (r"\.attention_norm1\.", ".norm1."),  # the context refiner's plain RMSNorm
    (r"\.attention_norm2\.", ".norm2."),
]


def diffusers_key(key: str) -> str:
    for pattern, repl in OFFICIAL_TO_DIFFUSERS:
        key = re.sub(pattern, repl, key, count=1)
    return key


def dit_diffusers_state_dict(sd: dict[str, torch.Tensor], cfg: DiTConfig) -> dict[str, torch.Tensor]:
    """Official NextDiT names -> diffusers Lumina2 names; each fused qkv split into to_q, to_k, to_v."""
    head = cfg.dim // cfg.n_heads
    sizes = (cfg.n_heads * head, cfg.n_kv_heads * head, cfg.n_kv_heads * head)
    out = {}
    for k, v in sd.items():
        if k.endswith(".attention.qkv.weight"):
            base = diffusers_key(k[: -len(".attention.qkv.weight")] + ".x")[:-2]
            for part, t in zip("qkv", torch.split(v, sizes, dim=0)):
                out[f"{base}.attn.to_{part}.weight"] = t.contiguous()
        else:
            out[diffusers_key(k)] = v.contiguous()
    return out


def lumina2_config_json(cfg: DiTConfig) -> dict:
    return {
        "_class_name": "Lumina2Transformer2DModel",
        "hidden_size": cfg.dim,
        "num_layers": cfg.n_layers,
        "num_refiner_layers": cfg.n_refiner_layers,
        "num_attention_heads": cfg.n_heads,
        "num_kv_heads": cfg.n_kv_heads,
        "patch_size": cfg.patch_size,
        "in_channels": cfg.in_channels,
        "cap_feat_dim": cfg.cap_feat_dim,
        "pooled_projection_dim": cfg.clip_text_dim,
        "multiple_of": cfg.multiple_of,
        "ffn_dim_multiplier": cfg.ffn_dim_multiplier,
        "norm_eps": cfg.norm_eps,
        "axes_dim_rope": list(cfg.axes_dims),
        "axes_lens": list(cfg.axes_lens),
    }


def save_diffusers(root: Path, pipe, dtypes: dict[str, torch.dtype | None]) -> None:
    """transformer/ (diffusers names), text_encoder/ + tokenizer/, text_encoder_2/ + tokenizer_2/, vae/."""
    from newbie.loading.writer import save_gemma, save_jina, save_vae

    t = pipe.text
    folder = root / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    dtype = dtypes["transformer"]
    sd = {k: (v.to(dtype) if dtype else v).detach().cpu() for k, v in pipe.dit.state_dict().items()}
    save_file(dit_diffusers_state_dict(sd, pipe.dit.cfg), str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(lumina2_config_json(pipe.dit.cfg), indent=2))
    save_gemma(root / "text_encoder", t.gemma, t.gemma_tokenizer, dtype=dtypes["text_encoder"])
    save_jina(root / "text_encoder_2", t.jina, t.jina_tokenizer, dtype=dtypes["clip_model"])
    t.gemma_tokenizer.save_pretrained(str(root / "tokenizer"))
    t.jina_tokenizer.save_pretrained(str(root / "tokenizer_2"))
    save_vae(root / "vae", pipe.codec.vae)
    index = {
        "_class_name": "NewbiePipeline",
        "_diffusers_version": "0.36.0",
        "transformer": ["diffusers", "Lumina2Transformer2DModel"],
        "text_encoder": ["transformers", "Gemma3ForConditionalGeneration"],
        "tokenizer": ["transformers", "GemmaTokenizerFast"],
        "text_encoder_2": ["transformers", "JinaCLIPModel"],
        "tokenizer_2": ["transformers", "XLMRobertaTokenizerFast"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
