"""A random-weight NewBie checkpoint at the real shapes (16.2 GB: 3.5B NextDiT_CLIP, Gemma3-4B text model,
Jina v3 text tower, FLUX VAE) in the official layout, written fast enough to be part of one GPU call.

Random weights measure loading, speed and memory only, never picture quality. The models are initialised on
the GPU and each tensor is streamed to its file as it comes back (stream_save), instead of building every
file in host memory first as safetensors' save_file does: the writer of bench/gpu_check.py took 21-38 s.

    python -m newbie.bench.random_checkpoint /tmp/newbie-full [--device cuda]
"""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from newbie.loading import writer

# torch dtype -> safetensors dtype name
ST_DTYPES = {
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def stream_save(tensors: dict[str, torch.Tensor], filename, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, writing each tensor's bytes as it is copied off its device (no whole-file
    buffer in host memory). The header is the format's: JSON padded with spaces to 8 bytes."""
    names = sorted(tensors)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for k in names:
        t = tensors[k]
        n = t.numel() * t.element_size()
        header[k] = {
            "dtype": ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for k in names:
            t = tensors[k].detach().contiguous().reshape(-1)
            if t.numel():
                f.write(t.view(torch.uint8).cpu().numpy().data)


def gemma3_4b_text_config():
    """Spec §3.1: the Gemma3-4B text model's widths, with the structure the ComfyUI loader also uses (bench/gpu_check.py
    and the startup bench build from this one list)."""
    from newbie.loading.comfy import gemma3_4b_fields
    from newbie.model.gemma import GemmaConfig

    fields = gemma3_4b_fields(
        vocab_size=262208,
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=34,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
    )
    return GemmaConfig.from_dict(fields)


def _detached(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in sd.items()}  # left on their device: stream_save copies them one by one


def save_components(root: Path, dit, gemma, gemma_tok, jina, jina_tok, vae) -> None:
    """newbie.loading.writer's layout and names (as save_model, with jina-clip-v2's LoRA adapter tensors), each
    safetensors file streamed."""
    with (
        mock.patch.object(writer, "save_file", stream_save),
        mock.patch.object(writer, "_contiguous", _detached),
    ):
        writer.write_model_index(root)
        writer.save_dit(root / "transformer", dit)
        writer.save_gemma(root / "text_encoder", gemma, gemma_tok)
        writer.save_jina(root / "clip_model", jina, jina_tok, lora_rank=4)
    writer.save_vae(root / "vae", vae)


def full_size_components(device: str):
    """Every model at the real shapes with random weights, the big ones built on `device` in bf16."""

    from newbie.config import DiTConfig
    from newbie.demo.tiny import word_tokenizer
    from newbie.demo.vocab import toy_words
    from newbie.loading.comfy import FLUX_VAE_CONFIG
    from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL
    from newbie.model.dit import NextDiT
    from newbie.model.gemma import Gemma, init_weights
    from newbie.model.jina import JinaConfig, JinaTextModel

    torch.manual_seed(0)
    words = toy_words() + [f"tag{i}" for i in range(2000)]
    cfg = gemma3_4b_text_config()
    with torch.device(device):
        dit = NextDiT(DiTConfig()).to(torch.bfloat16)
        gemma = init_weights(Gemma(cfg)).to(torch.bfloat16)
        jina = JinaTextModel(JinaConfig()).to(torch.bfloat16)
    vae = AutoencoderKL(AutoencoderConfig.from_dict(json.loads(FLUX_VAE_CONFIG.read_text())))
    return dit, gemma, word_tokenizer(words, "gemma"), jina, word_tokenizer(words, "jina"), vae


def write_random_full(root: Path, device: str = "cuda") -> dict:
    t0 = time.perf_counter()
    save_components(root, *full_size_components(device))
    gb = sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 1e9
    return {"write_s": time.perf_counter() - t0, "weights_gb": gb}


if __name__ == "__main__":
    args = sys.argv[1:]
    dev = args[args.index("--device") + 1] if "--device" in args else "cuda"
    print(json.dumps(write_random_full(Path(args[0]), dev)))
