"""Measured binding accuracy of the demo model on held-out prompts.

For each held-out (hair colour, position, count) combination, a scene is generated with the pipeline over
several seeds; in every image, the hair colour at each requested position is read by counting palette
pixels in that third of the head band, and the background from the empty top rows. The command line is
bench/demo_evaluate.py (it loads through the pipeline, which sits above this package).
"""

from __future__ import annotations

import random

import torch

from newbie.demo.vocab import BACKGROUNDS, PALETTE
from newbie.demo.world import HEAD_BAND, SIZE, SKIN, Scene, held_out_triples, random_scene, xml_caption

THIRDS = {"left": (0, SIZE // 3), "center": (SIZE // 3, 2 * SIZE // 3), "right": (2 * SIZE // 3, SIZE)}
MIN_HAIR_PIXELS = 40


def _nearest(pixels: torch.Tensor, colours: list[tuple[int, int, int]]) -> torch.Tensor:
    ref = torch.tensor(colours, dtype=torch.float32) / 255.0  # (K, 3)
    return torch.cdist(pixels, ref).argmin(dim=1)


def hair_colour(image: torch.Tensor, position: str, background: str) -> str | None:
    """The palette colour with most pixels in the head band of this third (None if hardly any)."""
    x0, x1 = THIRDS[position]
    y0, y1 = HEAD_BAND
    pixels = image[:, y0:y1, x0:x1].reshape(3, -1).T.float()
    names = list(PALETTE) + ["skin", "background"]
    cls = _nearest(pixels, list(PALETTE.values()) + [SKIN, BACKGROUNDS[background]])
    counts = torch.bincount(cls, minlength=len(names))[: len(PALETTE)]
    best = int(counts.argmax())
    return names[best] if int(counts[best]) >= MIN_HAIR_PIXELS else None


def background_of(image: torch.Tensor) -> str:
    """Nearest background colour to the mean of the top rows, where no figure reaches."""
    top = image[:, : HEAD_BAND[0] - 4].reshape(3, -1).mean(1)[None].float()
    names = list(BACKGROUNDS)
    return names[int(_nearest(top, list(BACKGROUNDS.values()))[0])]


def held_out_scenes(per_triple: int = 1, seed: int = 99) -> list[Scene]:
    """Scenes that each contain one held-out (hair, position, count) combination."""
    rng = random.Random(seed)
    scenes = []
    for hair, pos, n in sorted(held_out_triples()):
        for _ in range(per_triple):
            while True:
                s = random_scene(rng, n=n)
                chars = list(s.characters)
                k = next((i for i, c in enumerate(chars) if c.position == pos), None)
                if k is None or (hair, s.background) in {
                    ("white", "white_background"),
                    ("black", "black_background"),
                }:
                    continue
                c = chars[k]
                chars[k] = type(c)(c.gender, hair, c.eyes, c.shirt, pos)
                scenes.append(Scene(tuple(chars), s.background))
                break
    return scenes


def score(images: torch.Tensor, scenes: list[Scene]) -> dict:
    hair_ok = hair_total = bg_ok = 0
    for image, scene in zip(images, scenes):
        for c in scene.characters:
            hair_total += 1
            hair_ok += hair_colour(image, c.position, scene.background) == c.hair
        bg_ok += background_of(image) == scene.background
    return {
        "hair_accuracy": hair_ok / hair_total,
        "background_accuracy": bg_ok / len(scenes),
        "hair_checks": hair_total,
        "images": len(scenes),
    }


def evaluate(pipe, scenes: list[Scene], seeds: int, batch: int = 20, **gen_kwargs) -> dict:
    """Generate every scene with `seeds` seeds (0..seeds-1) and score the images."""
    images, flat = [], []
    for scene in scenes:
        prompt = xml_caption(scene)
        for start in range(0, seeds, batch):
            n = min(batch, seeds - start)
            gen = pipe.generate(prompt, seed=start, batch=n, **gen_kwargs)
            for im in gen.images:
                images.append(
                    torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1).float() / 255
                )
                flat.append(scene)
    return score(torch.stack(images), flat)
