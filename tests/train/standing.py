"""The CPU proof's concept: "standing", a word of the demo model's vocabulary that its world never drew. Here
a standing figure stands on the ground: a dark floor band across the bottom of the picture, below the shirt
hem where the toy world only ever paints background. The pixel test measures how much darker than the
background that band is."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from newbie.demo.world import BODY_BOTTOM, SIZE, Character, Scene, random_scene, render, xml_caption

FLOOR = (70, 55, 40)
FLOOR_TOP = BODY_BOTTOM + 6  # a gap below the shirt, so the floor never touches the figure
BACKGROUNDS = ("white_background", "blue_background", "green_background")  # not black: a dark floor


def with_action(scene: Scene, action: str) -> str:
    xml = xml_caption(scene)
    return xml.replace("</position>", f"</position> <action>{action}</action>") if action else xml


def draw_floor(img: torch.Tensor) -> torch.Tensor:
    img = img.clone()
    img[:, FLOOR_TOP:] = torch.tensor(FLOOR, dtype=img.dtype)[:, None, None] / 255
    return img


def single_scene(rng: random.Random, position: str | None = None) -> Scene:
    while True:
        s = random_scene(rng, n=1)
        if s.background in BACKGROUNDS:
            break
    c = s.characters[0]
    if position:
        c = Character(c.gender, c.hair, c.eyes, c.shirt, position)
    return Scene((c,), s.background)


def build_dataset(folder: Path, n: int, seed: int = 0) -> list[Scene]:
    """n single-figure images in pairs: a scene standing (a floor, the caption says "standing"), then the same
    scene without floor or word, so that the word is the only thing that tells the two apart."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = [s for s in (single_scene(rng) for _ in range((n + 1) // 2)) for _ in range(2)][:n]
    images = render(scenes)
    for i, (s, img) in enumerate(zip(scenes, images)):
        standing = i % 2 == 0
        if standing:
            img = draw_floor(img)
        arr = (img.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.xml").write_text(with_action(s, "standing" if standing else ""))
    return scenes


def floor_darkness(image: Image.Image) -> float:
    """1 - (mean brightness of the floor band) / (background brightness of the empty top rows): about 0.7 with
    the floor drawn, about 0 without (the band is then plain background)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype="float32")) / 255
    background = x[:8].mean()
    return float(1 - x[FLOOR_TOP + 2 : SIZE - 2].mean() / background)
