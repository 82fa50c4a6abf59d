"""The trained LoRA as one .safetensors file that ComfyUI's own LoRA loader and ours both map onto every
trained layer, with the training facts in its header as the popular trainers write them (kohya's `ss_*` keys).

Key formats (ComfyUI comfy/lora.py builds, for every model weight `diffusion_model.<name>.weight`, the LoRA
names `diffusion_model.<name>` and `lora_unet_<name with . -> _>`):
- "comfy" (default): `diffusion_model.<name>.lora_A.weight` (rank, in), `.lora_B.weight` (out, rank),
  `.alpha` (scalar);
- "kohya": `lora_unet_<name_underscored>.lora_down.weight`, `.lora_up.weight`, `.alpha`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from newbie.train.lora import LoraSet

FORMATS = ("comfy", "kohya")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def lora_tensors(lora: LoraSet, fmt: str = "comfy", dtype: torch.dtype = torch.float32) -> dict:
    out = {}
    for name, layer in lora.named_layers():
        down, up = layer.lora_down.detach().to("cpu", dtype), layer.lora_up.detach().to("cpu", dtype)
        if fmt == "kohya":
            stem = "lora_unet_" + name.replace(".", "_")
            out[f"{stem}.lora_down.weight"], out[f"{stem}.lora_up.weight"] = down, up
        else:
            stem = "diffusion_model." + name
            out[f"{stem}.lora_A.weight"], out[f"{stem}.lora_B.weight"] = down, up
        out[f"{stem}.alpha"] = torch.tensor(float(lora.alpha), dtype=dtype)
    return {k: v.contiguous() for k, v in out.items()}


def metadata(lora: LoraSet, facts: dict) -> dict[str, str]:
    """safetensors header strings. facts: base_sha256, steps, resolution, images, tag_frequency, lr, batch,
    seed, targets, model_name."""
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": f"{lora.alpha:g}",
        "ss_base_model_version": facts.get("model_name", "newbie-exp0.1"),
        "ss_steps": str(facts["steps"]),
        "ss_max_train_steps": str(facts.get("max_steps", facts["steps"])),
        "ss_resolution": f"({facts['resolution']}, {facts['resolution']})",
        "ss_num_train_images": str(facts["images"]),
        "ss_learning_rate": f"{facts.get('lr', 0):g}",
        "ss_train_batch_size": str(facts.get("batch", 1)),
        "ss_seed": str(facts.get("seed", 0)),
        "ss_tag_frequency": json.dumps(facts.get("tag_frequency", {}), ensure_ascii=False),
        "sshs_model_hash": facts.get("base_sha256", ""),
        "newbie_base_model_sha256": facts.get("base_sha256", ""),
        "newbie_targets": ",".join(facts.get("targets", ())),
        "newbie_latents": "FLUX shift subtracted, then scaled: (mode - shift) * scale",
        "newbie_trainer": "newbie train lora",
    }
    return meta


def write(path: Path, lora: LoraSet, facts: dict, fmt: str = "comfy", dtype: str = "bf16") -> None:
    """Atomic: a temp file beside the target, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_tensors(lora, fmt, DTYPES[dtype]), tmp, metadata=metadata(lora, facts))
    os.replace(tmp, path)
