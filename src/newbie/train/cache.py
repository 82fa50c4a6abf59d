"""Caption encodings (Gemma features + Jina pooled) and VAE latents, computed once per image and kept on disk;
training then runs the DiT alone and the encoders leave the GPU. Latents are the VAE posterior mode with the
FLUX shift subtracted before the scale, z = (mode - shift) * scale (spec §4.4; the official NewbieLoraTrainer
skips the shift)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from newbie.train.dataset import Item, load_image
from newbie.train.objective import Blank

CACHE_VERSION = "1"


@dataclass
class Entry:
    x1: Tensor  # (16, h, w) float32
    cap: Tensor  # (L, cap_feat_dim), valid tokens only
    pooled: Tensor  # (clip_dim,)


@contextlib.contextmanager
def on_device(modules, device: torch.device):
    """Move modules to the device for the block, then back where they were (the CPU, for training)."""
    homes = [next(m.parameters()).device for m in modules]
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        for m, home in zip(modules, homes):
            m.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _key(item: Item, bucket: tuple[int, int], identity: str) -> str:
    h = hashlib.sha256()
    h.update(item.image.read_bytes())
    h.update(f"|{item.caption}|{bucket}|{identity}|{CACHE_VERSION}".encode())
    return h.hexdigest()[:32]


def _identity(pipe) -> str:
    """What the encodings depend on besides the image and caption: the encoders' files and settings."""
    f, c, t = pipe.folder, pipe.codec.cfg, pipe.text.cfg
    files = [str(getattr(f, name, "")) for name in ("text_encoder", "clip_model", "vae")]
    return "|".join(
        [*files, str(c.scaling_factor), str(c.shift_factor), str(t.hidden_layer), pipe.dtypes["text"]]
    )


def encode_dataset(
    pipe,
    items: list[Item],
    buckets: list[tuple[int, int]],
    cache_dir: Path,
    device: torch.device,
    progress=None,
) -> tuple[list[Entry], Blank]:
    """One Entry per item (buckets[i] is item i's size), read from cache_dir or computed and written there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    identity = _identity(pipe)
    keys = [_key(it, b, identity) for it, b in zip(items, buckets)]
    todo = [i for i, k in enumerate(keys) if not (cache_dir / f"{k}.safetensors").is_file()]
    blank_path = cache_dir / f"blank-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.safetensors"
    text = pipe.text
    if todo or not blank_path.is_file():
        with on_device([text.gemma, text.jina], device):
            if not blank_path.is_file():
                e = text.encode([""])
                _save({"cap": e.cap_feats[0, : int(e.cap_mask[0].sum())], "pooled": e.pooled[0]}, blank_path)
            for n, i in enumerate(todo):
                e = text.encode([items[i].caption])
                part = {"cap": e.cap_feats[0, : int(e.cap_mask[0].sum())], "pooled": e.pooled[0]}
                _save(part, cache_dir / f"{keys[i]}.text.safetensors")
                if progress:
                    progress("captions", n + 1, len(todo))
        with on_device([pipe.codec.vae], device):
            for n, i in enumerate(todo):
                x1 = pipe.codec.encode(load_image(items[i].image, buckets[i])[None].to(device))[0]
                part = load_file(cache_dir / f"{keys[i]}.text.safetensors")
                _save({"x1": x1, **part}, cache_dir / f"{keys[i]}.safetensors")
                os.unlink(cache_dir / f"{keys[i]}.text.safetensors")
                if progress:
                    progress("latents", n + 1, len(todo))
    blank = load_file(blank_path)
    entries = []
    for k in keys:
        d = load_file(cache_dir / f"{k}.safetensors")
        entries.append(Entry(d["x1"].float(), d["cap"], d["pooled"]))
    return entries, Blank(blank["cap"], blank["pooled"])


def _save(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)
