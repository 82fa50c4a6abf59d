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
MAX_NAME = 255  # characters of an adapter name (a path under adapters/)
INPUT_FILES = {"init_image": ("init_image.png", "RGB"), "mask": ("mask.png", "L")}  # kept in images/<job>/


# A side past this is refused before decoding whatever the pixel count: a 1x16,777,216 PNG passes a pixel
# cap but costs gigabytes in the resize and the inpainting mask passes. Twice the largest generated side.
MAX_INPUT_SIDE = 4096


def decode_image(text: str, field: str, mode: str, max_pixels: int, max_side: int = MAX_INPUT_SIDE):
    """Base64 PNG/JPEG -> PIL image in `mode`; 400 for anything PIL cannot read. The body limit bounds the
    bytes; max_pixels and max_side, checked on the header before any pixel is decoded, bound what they
    decompress to (a small PNG or JPEG can claim a huge canvas)."""
    from PIL import Image, ImageOps

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
            if im.width * im.height > max_pixels or max(im.width, im.height) > max_side:
                raise ApiError(
                    400,
                    f"{field} is {im.width}x{im.height}; the server reads images up to {max_pixels} pixels "
                    f"and {max_side} per side",
                    "invalid_image",
                    field,
                )
            im.load()
            return ImageOps.exif_transpose(im).convert(mode)
    except ApiError:
        raise
    # ValueError: PIL's "Decompressed Data Too Large" for a huge text chunk; SyntaxError: a broken chunk
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ApiError(
            400, f"{field} is not a readable PNG or JPEG ({reason})", "invalid_image", field
        ) from None


def check_unicode(value, where: str = "body") -> None:
    """422 for a string holding a lone surrogate (JSON allows "\\ud800", UTF-8 does not): it would be
    committed, then fail every reply that shows it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            message = f"{where} is not valid Unicode (a lone surrogate at character {e.start})"
            raise ApiError(422, message, "invalid_text", where) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, where)
            check_unicode(item, f"{where}.{key}" if where != "body" else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_unicode(item, f"{where}[{i}]")


def adapter_path(data_dir: Path, name: str) -> Path:
    """DATA/adapters/<name>, or 400: no absolute path, no '..', and nothing a symlink takes outside."""
    from newbie.adapters.files import files_inside
    from newbie.errors import NewbieError

    root = (Path(data_dir) / ADAPTERS).resolve()
    shown = repr(name[:100])[1:-1]  # control characters escaped: the message is one printable line
    if len(name) > MAX_NAME or any(ord(c) < 32 or c == "\x7f" for c in name):
        message = f"adapter name '{shown}' must be at most {MAX_NAME} printable characters"
        raise ApiError(400, message, "invalid_lora", "loras")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if not name or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        message = f"adapter name '{shown}' must be a relative path inside {ADAPTERS}/"
        raise ApiError(400, message, "invalid_lora", "loras")
    try:
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ApiError(400, f"adapter '{shown}' resolves outside {ADAPTERS}/", "invalid_lora", "loras")
        if not path.exists():
            message = f"no adapter '{shown}' in the server's {ADAPTERS}/ folder"
            raise ApiError(400, message, "lora_not_found", "loras")
        files_inside(path, root)  # a symlinked weights file or config inside the folder
    except NewbieError as e:
        message = str(e).replace(str(root), ADAPTERS)  # no server paths in messages
        raise ApiError(400, f"adapter '{shown}': {message}", "invalid_lora", "loras") from None
    except (OSError, ValueError) as e:  # a name the file system refuses (too long a component)
        reason = type(e).__name__ if not getattr(e, "strerror", None) else e.strerror
        raise ApiError(
            400, f"adapter name '{shown}' is not a usable file name ({reason})", "invalid_lora", "loras"
        ) from None
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
