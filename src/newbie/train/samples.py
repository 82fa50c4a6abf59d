"""What a run shows while it trains: sample images at fixed seeds through the engine's own sampler (with the
LoRA being trained attached), and a loss-curve PNG drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from newbie.train.cache import on_device


def encode_prompts(pipe, prompts: list[str], device: torch.device) -> dict:
    """prompt -> (cond, uncond) TextEmbeds, encoded once while the encoders visit the GPU."""
    negative = pipe.spec.sampling.negative
    with on_device([pipe.text.gemma, pipe.text.jina], device):
        uncond = pipe.text.encode([negative]).to("cpu")
        return {p: (pipe.text.encode([p]).to("cpu"), uncond) for p in prompts}


def draw_samples(pipe, embeds: dict, seeds: list[int], folder: Path, step: int) -> list[Path]:
    """One PNG per (prompt, seed) at the model's default sampling settings."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (prompt, (cond, uncond)) in enumerate(embeds.items()):
        for seed in seeds:
            req = pipe.request(prompt, seed=seed)
            req.given_embeds = (cond.to(pipe.device), uncond.to(pipe.device))
            with torch.no_grad():
                image = pipe.run(req).images[0]
            path = folder / f"step{step:06d}-p{k}-seed{seed}.png"
            image.save(path)
            written.append(path)
    return written


def loss_curve(losses: list[float], path: Path, size=(640, 360)) -> None:
    """Raw losses as grey dots and their running mean (window 1/20 of the run) as a line."""
    w, h = size
    pad_l, pad_r, pad_t, pad_b = 56, 12, 12, 28
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    if losses:
        lo, hi = min(losses), max(losses)
        hi = hi if hi > lo else lo + 1e-6
        n = len(losses)

        def xy(i: int, v: float) -> tuple[float, float]:
            x = pad_l + (w - pad_l - pad_r) * (i / max(1, n - 1))
            return x, pad_t + (h - pad_t - pad_b) * (1 - (v - lo) / (hi - lo))

        for i, v in enumerate(losses):
            x, y = xy(i, v)
            d.point((x, y), fill=(170, 170, 170))
        win = max(1, n // 20)
        csum = [0.0]
        for v in losses:
            csum.append(csum[-1] + v)
        mean = [(csum[i + 1] - csum[max(0, i + 1 - win)]) / min(win, i + 1) for i in range(n)]
        if n > 1:
            d.line([xy(i, v) for i, v in enumerate(mean)], fill=(30, 90, 200), width=2)
        d.text((4, pad_t), f"{hi:.4f}", fill="black")
        d.text((4, h - pad_b - 10), f"{lo:.4f}", fill="black")
        d.text((pad_l, h - pad_b + 8), f"loss over {n} steps", fill="black")
    d.rectangle((pad_l, pad_t, w - pad_r, h - pad_b), outline="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
