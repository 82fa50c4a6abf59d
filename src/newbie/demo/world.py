"""The toy world of the demo model: scenes, their NewBie-style captions, and a batched renderer.

128x128 RGB, a plain background, 1-3 figures (round head with hair, two eyes, a body in shirt colour) at
left / center / right. Girls have long hair down to the shoulders, boys a short cap of hair.
Hair the same colour as the background (white on white, black on black) would be invisible, so such
scenes are never generated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from newbie.demo.vocab import BACKGROUNDS, PALETTE, POSITIONS

SIZE = 128
SKIN = (250, 218, 186)
CENTERS = {"left": 21, "center": 64, "right": 107}  # the middle of each third
HEAD_Y, HEAD_R, HAIR_R = 40, 10, 13
BODY_TOP, BODY_BOTTOM, BODY_HALF_W = 55, 104, 13
HEAD_BAND = (HEAD_Y - HAIR_R, HEAD_Y + HEAD_R)  # rows where the hair is measured
INVISIBLE = {("white", "white_background"), ("black", "black_background")}
COLOURS = list(PALETTE)


@dataclass(frozen=True)
class Character:
    gender: str  # "1girl" or "1boy"
    hair: str
    eyes: str
    shirt: str
    position: str


@dataclass(frozen=True)
class Scene:
    characters: tuple[Character, ...]  # in caption order
    background: str


def count_tags(chars: tuple[Character, ...]) -> str:
    girls = sum(c.gender == "1girl" for c in chars)
    boys = len(chars) - girls
    tags = []
    if girls:
        tags.append("1girl" if girls == 1 else f"{girls}girls")
    if boys:
        tags.append("1boy" if boys == 1 else f"{boys}boys")
    if girls > 1:
        tags.append("multiple_girls")
    if boys > 1:
        tags.append("multiple_boys")
    return ", ".join(tags)


def xml_caption(scene: Scene) -> str:
    parts = []
    for i, c in enumerate(scene.characters, 1):
        parts.append(
            f"<character_{i}> <n>$character_{i}$</n> <gender>{c.gender}</gender> "
            f"<appearance>{c.hair}_hair, {c.eyes}_eyes</appearance> <clothing>{c.shirt}_shirt</clothing> "
            f"<position>{c.position}</position> </character_{i}>"
        )
    parts.append(
        f"<general_tags> <count>{count_tags(scene.characters)}</count> "
        f"<background>{scene.background}</background> </general_tags>"
    )
    return " ".join(parts)


def tag_caption(scene: Scene) -> str:
    tags = [count_tags(scene.characters)]
    for c in scene.characters:
        tags += [f"{c.hair}_hair", f"{c.eyes}_eyes", f"{c.shirt}_shirt", c.position]
    tags.append(scene.background)
    return ", ".join(tags)


def held_out_triples(seed: int = 1234, fraction: float = 0.15) -> set[tuple[str, str, int]]:
    """(hair colour, position, character count) combinations kept out of training, to measure binding."""
    triples = [(h, p, n) for h in COLOURS for p in POSITIONS for n in (1, 2, 3)]
    rng = random.Random(seed)
    rng.shuffle(triples)
    return set(triples[: int(len(triples) * fraction)])


def scene_triples(scene: Scene) -> set[tuple[str, str, int]]:
    n = len(scene.characters)
    return {(c.hair, c.position, n) for c in scene.characters}


def random_scene(rng: random.Random, exclude: set | None = None, n: int | None = None) -> Scene:
    while True:
        count = n or rng.choice((1, 1, 2, 2, 3))
        positions = rng.sample(POSITIONS, count)
        background = rng.choice(list(BACKGROUNDS))
        chars = []
        for pos in positions:
            hair = rng.choice([c for c in COLOURS if (c, background) not in INVISIBLE])
            chars.append(
                Character(rng.choice(("1girl", "1boy")), hair, rng.choice(COLOURS), rng.choice(COLOURS), pos)
            )
        rng.shuffle(chars)  # caption order is unrelated to position: binding must go through <position>
        scene = Scene(tuple(chars), background)
        if not exclude or not (scene_triples(scene) & exclude):
            return scene


def _colour_table(names: list[str], table: dict, device) -> torch.Tensor:
    return torch.tensor([table[n] for n in names], dtype=torch.float32, device=device) / 255.0


def render(scenes: list[Scene], device="cpu") -> torch.Tensor:
    """Scenes -> images (B, 3, 128, 128) in [0, 1]. Flat colours, hard edges; batched over scenes and figures
    (figures stand in separate thirds and never overlap, so painting order only matters within a figure)."""
    b, slots = len(scenes), 3
    present = torch.zeros(b, slots, dtype=torch.bool)
    cx = torch.zeros(b, slots)
    girl = torch.zeros(b, slots, dtype=torch.bool)
    hair, eyes, shirt = (torch.zeros(b, slots, 3) for _ in range(3))
    palette = {k: torch.tensor(v, dtype=torch.float32) / 255.0 for k, v in PALETTE.items()}
    for i, s in enumerate(scenes):
        for k, c in enumerate(s.characters):
            present[i, k], cx[i, k], girl[i, k] = True, CENTERS[c.position], c.gender == "1girl"
            hair[i, k], eyes[i, k], shirt[i, k] = palette[c.hair], palette[c.eyes], palette[c.shirt]
    present, cx, girl, hair, eyes, shirt = (t.to(device) for t in (present, cx, girl, hair, eyes, shirt))
    bg = _colour_table([s.background for s in scenes], BACKGROUNDS, device)  # (B, 3)

    ys = torch.arange(SIZE, device=device, dtype=torch.float32) + 0.5
    yy, xx = ys[:, None].expand(SIZE, SIZE), ys[None, :].expand(SIZE, SIZE)
    dx = xx[None, None] - cx[:, :, None, None]  # (B, S, H, W)
    img = bg[:, None, None, :].expand(b, SIZE, SIZE, 3).clone()  # (B, H, W, 3)
    skin = torch.tensor(SKIN, dtype=torch.float32, device=device) / 255.0
    on = present[:, :, None, None]

    def paint(mask: torch.Tensor, colour: torch.Tensor):
        nonlocal img
        mask = mask & on
        col = colour if colour.ndim == 3 else colour.expand(b, slots, 3)
        painted = (mask[..., None].float() * col[:, :, None, None, :]).sum(1)
        img = torch.where(mask.any(1)[..., None], painted, img)

    paint((dx.abs() <= BODY_HALF_W) & (yy >= BODY_TOP) & (yy <= BODY_BOTTOM), shirt)
    long_hair = (dx.abs() <= HAIR_R) & (yy >= HEAD_Y) & (yy <= HEAD_Y + 22)
    paint(long_hair & girl[:, :, None, None], hair)  # girls: long hair falling to the shoulders
    paint(dx**2 + (yy - HEAD_Y) ** 2 <= HAIR_R**2, hair)
    paint(dx**2 + (yy - HEAD_Y - 3) ** 2 <= HEAD_R**2, skin)
    eye = (((dx + 4).abs() <= 1.5) | ((dx - 4).abs() <= 1.5)) & ((yy - HEAD_Y - 3).abs() <= 1.5)
    paint(eye, eyes)
    return img.permute(0, 3, 1, 2).contiguous()
