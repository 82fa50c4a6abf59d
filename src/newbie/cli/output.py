"""What `newbie generate` writes: each distinct warning once, the PNGs (recipe embedded), their paths, timings."""

from __future__ import annotations

import sys
from pathlib import Path


def output_paths(out: Path, n: int) -> list[Path]:
    """out.png for one image; out-1.png, out-2.png, ... for a batch."""
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k + 1}{out.suffix}") for k in range(n)]


def write_generation(gen, out: Path, quiet: bool) -> None:
    from newbie.pipeline.images import save_png

    shown = set()
    for rec in gen.recipes:
        for msg in rec.warnings:
            if msg not in shown:
                shown.add(msg)
                print(f"warning: {msg}", file=sys.stderr)
    for image, rec, path in zip(gen.images, gen.recipes, output_paths(out, len(gen.images))):
        save_png(image, rec, path)
        print(path)
    if not quiet:
        t = gen.timings
        print(
            f"encode {t['encode_s']:.2f}s  denoise {t['denoise_s']:.2f}s  decode {t['decode_s']:.2f}s",
            file=sys.stderr,
        )
