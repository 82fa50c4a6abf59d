"""Tensors -> PIL images, and PNG files written atomically with their recipe."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from newbie.pipeline.recipe import PNG_KEY, Recipe


def to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


def batch_paths(path: Path, n: int) -> list[Path]:
    """Where n images named `path` go: that path for one, path-1.png, path-2.png, ... for a batch."""
    return [path] if n == 1 else [path.with_name(f"{path.stem}-{k + 1}{path.suffix}") for k in range(n)]


def save_png(image, recipe: Recipe, path: Path, durable: bool = False) -> Path:
    """Write to a temporary file in the same folder, then rename: never a half-written PNG at `path`.
    durable: fsync the file before the rename and the folder after it, so the PNG survives a power cut
    once this returns (the server marks a job done only then)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_itxt(PNG_KEY, recipe.to_json())
    info.add_itxt("parameters", recipe.summary())
    fd, tmp = tempfile.mkstemp(prefix=".newbie-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the user's image private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path
