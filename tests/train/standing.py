"""The CPU proof's concept: "standing", a word of the demo model's vocabulary that its world never drew. Here
a standing figure has two dark legs below its shirt (the toy world's figures end at the shirt hem), and the
pixel test measures how much darker than the background the leg boxes are."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from newbie.demo.world import BODY_BOTTOM, CENTERS, SIZE, Character, Scene, random_scene, render, xml_caption

LEG = (25, 25, 25)
LEG_TOP, LEG_BOTTOM = BODY_BOTTOM + 2, SIZE - 4
LEG_BOXES = ((-9, -2), (2, 9))  # x offsets of the two legs from the figure's centre
BACKGROUNDS = ("white_background", "blue_background", "green_background")  # not black: black legs


def with_action(scene: Scene, action: str) -> str:
    xml = xml_caption(scene)
    return xml.replace("</position>", f"</position> <action>{action}</action>") if action else xml


def draw_legs(img: torch.Tensor, scene: Scene) -> torch.Tensor:
    img = img.clone()
    leg = torch.tensor(LEG, dtype=img.dtype)[:, None, None] / 255
    for c in scene.characters:
        cx = CENTERS[c.position]
        for a, b in LEG_BOXES:
            img[:, LEG_TOP:LEG_BOTTOM, cx + a : cx + b] = leg
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
    """n single-figure images in pairs: a scene standing (legs, the caption says "standing"), then the same
    scene without legs or the word, so that the word is the only thing that tells the two apart."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = [s for s in (single_scene(rng) for _ in range((n + 1) // 2)) for _ in range(2)][:n]
    images = render(scenes)
    for i, (s, img) in enumerate(zip(scenes, images)):
        standing = i % 2 == 0
        if standing:
            img = draw_legs(img, s)
        arr = (img.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.xml").write_text(with_action(s, "standing" if standing else ""))
    return scenes


def leg_darkness(image: Image.Image, scene: Scene) -> float:
    """1 - (mean brightness in the leg boxes) / (background brightness): about 0.8 with legs drawn, about 0
    without (the leg boxes are then plain background)."""
    x = torch.from_numpy(__import__("numpy").asarray(image.convert("RGB"), dtype="float32")) / 255
    bg = x[:8].reshape(-1, 3).mean(0).mean()  # the empty top rows
    vals = []
    for c in scene.characters:
        cx = CENTERS[c.position]
        for a, b in LEG_BOXES:
            vals.append(x[LEG_TOP + 2 : LEG_BOTTOM - 2, cx + a + 1 : cx + b - 1].mean())
    return float(1 - torch.stack(vals).mean() / bg)
