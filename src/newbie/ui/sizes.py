"""The sizes a model was trained at, offered as the page's size/aspect presets."""

from __future__ import annotations

from math import gcd

from newbie.config import ModelSpec

BUCKET = 64  # training crops are multiples of 64 pixels (spec §4.4)


def trained_sizes(spec: ModelSpec) -> list[tuple[int, int]]:
    """(width, height) of the training buckets: the official crop-size walk over 64-pixel patches.

    Starting from the widest strip, the walk grows the height while the area fits and otherwise narrows the
    width, keeping every stop whose aspect is within max_aspect. For NewBie (1024^2 pixels, aspect 4) that is
    2048x512 ... 1024x1024 ... 512x2048; for the toy demo model (128^2, aspect 1) only 128x128.
    """
    patches = spec.trained_pixels // (BUCKET * BUCKET)
    sizes = []
    wide, high = patches, 1
    while wide > 0:
        if max(wide, high) / min(wide, high) <= spec.max_aspect:
            sizes.append((wide * BUCKET, high * BUCKET))
        if (high + 1) * wide <= patches:
            high += 1
        else:
            wide -= 1
    default = (spec.sampling.width, spec.sampling.height)
    if default not in sizes:
        sizes.append(default)  # a model folder may name a default outside the walk; always offer it
    return sorted(sizes, key=lambda s: (s[0] / s[1], s[0]), reverse=True)


def size_label(width: int, height: int) -> str:
    d = gcd(width, height)
    return f"{width}x{height}  ({width // d}:{height // d})"
