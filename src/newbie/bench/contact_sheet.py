"""The side-by-side contact sheet: one row per (prompt, seed), one column per dtype, then one difference
heat-map column per non-reference dtype (|image - fp32|, largest channel, on one scale for the whole sheet).

Pillow and numpy only, so it is drawn even where matplotlib is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from newbie.bench.metrics import abs_difference

# An inferno-like ramp: black -> purple -> red -> orange -> pale yellow; dark means "no difference".
HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
HEAT_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)
LABEL_H, MARGIN = 34, 4


def heat(diff: np.ndarray, scale: float) -> Image.Image:
    """(H, W) errors in 0..255 -> an RGB heat map where `scale` is the top colour."""
    t = np.clip(diff / scale, 0, 1) if scale > 0 else np.zeros_like(diff)
    rgb = np.stack([np.interp(t, HEAT_STOPS, HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


def max_pool(diff: np.ndarray, width: int) -> np.ndarray:
    """Shrink an error map towards `width` by taking each block's largest error, so that one bad pixel of a
    1024-pixel image still shows in a 256-pixel tile (resampling would average it away)."""
    f = diff.shape[1] // width
    if f <= 1:
        return diff
    h, w = diff.shape[0] // f * f, diff.shape[1] // f * f
    return diff[:h, :w].reshape(h // f, f, w // f, f).max(axis=(1, 3))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(
    pictures: dict,
    dtypes: list[str],
    prompt_count: int,
    seeds: list[int],
    path: Path,
    reference: str = "fp32",
    cell: int = 256,
) -> Path:
    """pictures: (dtype, prompt_index, seed) -> PIL image. Dtypes without pictures are left out."""
    if not pictures:
        raise ValueError("no pictures for a contact sheet")
    shown = [d for d in dtypes if any(k[0] == d for k in pictures)]
    compared = [d for d in shown if d != reference]
    keys = [(pi, s) for pi in range(prompt_count) for s in seeds if (reference, pi, s) in pictures]
    diffs = {
        (d, pi, s): abs_difference(pictures[(d, pi, s)], pictures[(reference, pi, s)])
        for d in compared
        for pi, s in keys
        if (d, pi, s) in pictures
    }
    scale = max((float(v.max()) for v in diffs.values()), default=0.0)
    columns = [(d, "image") for d in shown] + [(d, "diff") for d in compared]
    first = next(iter(pictures.values()))
    cw, ch = cell, max(1, round(cell * first.height / first.width))  # keep the aspect ratio
    row_label_w = 70
    width = row_label_w + len(columns) * (cw + MARGIN)
    height = 2 * LABEL_H + len(keys) * (ch + MARGIN)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(14), _font(11)
    for c, (d, kind) in enumerate(columns):
        x = row_label_w + c * (cw + MARGIN)
        draw.text((x + 4, 8), d if kind == "image" else f"|{d} - {reference}|", fill="black", font=font)
    draw.text(
        (4, height - LABEL_H + 8),
        f"heat map: black = equal, pale yellow = {scale:.0f}/255 (the largest error on this sheet)",
        fill="black",
        font=small,
    )
    for r, (pi, s) in enumerate(keys):
        y = LABEL_H + r * (ch + MARGIN)
        draw.text((4, y + ch // 2 - 14), f"prompt {pi + 1}\nseed {s}", fill="black", font=small)
        for c, (d, kind) in enumerate(columns):
            x = row_label_w + c * (cw + MARGIN)
            if kind == "image":
                tile = pictures.get((d, pi, s))
            else:
                tile = heat(max_pool(diffs[(d, pi, s)], cw), scale) if (d, pi, s) in diffs else None
            if tile is None:
                draw.rectangle([x, y, x + cw - 1, y + ch - 1], outline="grey")
                continue
            resample = Image.NEAREST if tile.width <= cw else Image.LANCZOS  # keep toy pixels crisp
            sheet.paste(tile.convert("RGB").resize((cw, ch), resample), (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path
