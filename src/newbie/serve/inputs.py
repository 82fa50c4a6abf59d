"""The artist inputs of a request (img2img/inpainting images, LoRA adapters), taken so that no request reads
or writes outside the data folder: images come in the JSON body as base64 and are kept in the job's folder;
adapters are named relative to DATA/adapters/ and nothing else is opened."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path, PurePosixPath, PureWindowsPath

from newbie.serve.errors import ApiError

ADAPTERS = "adapters"
INPUT_FILES = {"init_image": ("init_image.png", "RGB"), "mask": ("mask.png", "L")}  # kept in images/<job>/


def decode_image(text: str, field: str, mode: str, max_pixels: int):
    """Base64 PNG/JPEG -> PIL image in `mode`; 400 for anything PIL cannot read. The body limit bounds the
    bytes; max_pixels bounds what they decompress to (a small PNG can claim a huge canvas)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if text.startswith("data:"):  # browsers' data URLs: data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{field} is not valid base64", "invalid_image", field) from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in ("PNG", "JPEG"):
                raise ApiError(400, f"{field} must be a PNG or JPEG, got {im.format}", "invalid_image", field)
            if im.width * im.height > max_pixels:
                raise ApiError(
                    400,
                    f"{field} is {im.width}x{im.height}; the server reads images up to {max_pixels} pixels",
                    "invalid_image",
                    field,
                )
            im.load()
            return ImageOps.exif_transpose(im).convert(mode)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ApiError(400, f"{field} is not a readable PNG or JPEG ({e})", "invalid_image", field) from None


def adapter_path(data_dir: Path, name: str) -> Path:
    """DATA/adapters/<name>, or 400: no absolute path, no '..', and nothing a symlink takes outside."""
    root = (Path(data_dir) / ADAPTERS).resolve()
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if not name or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        message = f"adapter name '{name[:200]}' must be a relative path inside {ADAPTERS}/"
        raise ApiError(400, message, "invalid_lora", "loras")
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ApiError(400, f"adapter '{name[:200]}' resolves outside {ADAPTERS}/", "invalid_lora", "loras")
    if not path.exists():
        message = f"no adapter '{name[:200]}' in the server's {ADAPTERS}/ folder"
        raise ApiError(400, message, "lora_not_found", "loras")
    return path


def lora_arguments(data_dir: Path, loras: list[dict]) -> list[tuple[str, float]]:
    """[{"name", "strength"}] -> the pipeline's (path, strength) list, every name checked."""
    return [(str(adapter_path(data_dir, item["name"])), item["strength"]) for item in loras or []]


def save_inputs(folder: Path, images: dict) -> None:
    """PNG is lossless, so the kept copy has the pixels (and so the recipe hash) of the decoded upload."""
    folder.mkdir(parents=True, exist_ok=True)
    for field, image in images.items():
        image.save(folder / INPUT_FILES[field][0])


def load_inputs(folder: Path, params: dict) -> dict:
    """The job's kept images, for the fields its parameters say it has."""
    from PIL import Image

    out = {}
    for field, (filename, mode) in INPUT_FILES.items():
        if params.get(field):
            with Image.open(folder / filename) as im:
                out[field] = im.convert(mode)
    return out
