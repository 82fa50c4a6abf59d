"""Tiny adapters written by the tests, in the two on-disk formats of spec §6, for the tiny DiT's layers."""

import json

import torch
from safetensors.torch import save_file

# NewbieLoraTrainer's default targets (spec §6), as full layer names of the tiny DiT
PEFT_TARGETS = [
    "layers.0.attention.qkv",
    "layers.1.attention.out",
    "layers.1.feed_forward.w2",
    "noise_refiner.0.attention.qkv",
    "context_refiner.0.feed_forward.w2",
    "time_text_embed.1",
    "clip_text_pooled_proj.1",
]
# names with underscores of their own, which LyCORIS' '.' -> '_' spelling makes ambiguous to split back
LOKR_TARGETS = [
    "layers.0.adaLN_modulation.1",
    "noise_refiner.0.feed_forward.w2",
    "context_refiner.0.attention.qkv",
    "clip_text_pooled_proj.1",
    "time_text_embed.1",
    "final_layer.adaLN_modulation.1",
]


def write_peft(
    folder,
    shapes,
    targets=PEFT_TARGETS,
    rank=2,
    alpha=4.0,
    seed=0,
    zero=False,
    prefix="base_model.model.",
    config=True,
):
    """A PEFT save_pretrained folder: adapter_model.safetensors + adapter_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in targets:
        out, inp = shapes[name]
        tensors[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, inp, generator=g) * 0.3
        up = torch.randn(out, rank, generator=g) * 0.3
        tensors[f"{prefix}{name}.lora_B.weight"] = torch.zeros_like(up) if zero else up
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    if config:
        (folder / "adapter_config.json").write_text(
            json.dumps(
                {
                    "peft_type": "LORA",
                    "r": rank,
                    "lora_alpha": alpha,
                    "target_modules": ["attention.qkv"],
                    "bias": "none",
                }
            )
        )
    return folder


def write_lokr(path, shapes, targets=LOKR_TARGETS, factor=4, rank=None, alpha=2.0, seed=0):
    """A LyCORIS LoKr file; rank=None writes full lokr_w2, else the factorised lokr_w2_a/lokr_w2_b."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in targets:
        out, inp = shapes[name]
        key = "lycoris_" + name.replace(".", "_")
        tensors[f"{key}.lokr_w1"] = torch.randn(factor, factor, generator=g) * 0.3
        c, d = out // factor, inp // factor
        if rank is None:
            tensors[f"{key}.lokr_w2"] = torch.randn(c, d, generator=g) * 0.1
        else:
            tensors[f"{key}.lokr_w2_a"] = torch.randn(c, rank, generator=g) * 0.3
            tensors[f"{key}.lokr_w2_b"] = torch.randn(rank, d, generator=g) * 0.3
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path), metadata={"adapter_type": "lyco_lokr", "lora_rank": "4", "lora_alpha": "4"})
    return path


def forward(dit, seed=0):
    """One DiT call on fixed random inputs (latent 16x8x8, 6 caption tokens)."""
    g = torch.Generator().manual_seed(seed)
    cfg = dit.cfg
    dtype = next(dit.parameters()).dtype
    x = torch.randn(1, cfg.in_channels, 8, 8, generator=g).to(dtype)
    cap = torch.randn(1, 6, cfg.cap_feat_dim, generator=g)
    pooled = torch.randn(1, cfg.clip_text_dim, generator=g)
    with torch.no_grad():
        return dit(x, torch.tensor([0.3]), cap, None, pooled)
