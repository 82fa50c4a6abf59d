"""The sidebar's "Artist workflows" as plain values: hires pass, LoRA adapters, img2img and inpainting.
Widget state -> `Pipeline.request()` keyword arguments, and a recipe -> widget state. Keys are widget keys,
except `init_image`/`mask` (the uploaded pictures as PIL images, put in by the page) and the `*_path` /
`hires_recipe` keys, which hold what "Use these settings" took from a recipe (an uploader cannot be set)."""

from __future__ import annotations

import io
from collections.abc import Mapping

from newbie.adapters.stack import parse_lora
from newbie.errors import NewbieError
from newbie.pipeline.img2img import DEFAULTS
from newbie.pipeline.recipe import Recipe

HIRES_SCALES = (1.5, 2.0)
IMAGE_TYPES = ("png", "jpg", "jpeg", "webp")
# An upload is checked on its size and its header before any pixel is decoded: a 164 KB PNG can claim a
# canvas of gigabytes. The same bounds as the API's (serve/inputs.py): inputs are resized to the request.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
MAX_UPLOAD_PIXELS = 4 * 2048 * 2048


def workflow_defaults() -> dict[str, object]:
    return {
        "hires": False,
        "hires_scale": DEFAULTS.hires_scale,
        "hires_recipe": None,  # a recipe's exact hires target/upscaler/strength/steps, while the toggle is on
        "loras": "",
        "fuse_loras": False,
        "strength": DEFAULTS.strength,
        "mask_feather": DEFAULTS.mask_feather,
        "init_image_path": "",
        "mask_path": "",
    }


def parse_lora_lines(text: str) -> list[tuple[str, float]]:
    """One `path` or `path:strength` per line; blank lines and `#` comments are skipped."""
    out = []
    for n, line in enumerate(str(text).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, strength = parse_lora(line)
        if not path.strip() or path.startswith(":"):  # ':0.5' is a strength with the path forgotten
            raise NewbieError(f"LoRA line {n} has no path: '{line}'")
        out.append((path.strip(), strength))
    return out


def lora_lines(loras: list[dict]) -> str:
    """A recipe's adapters back into the text box, one `path:strength` per line."""
    return "\n".join(f"{a['path']}:{float(a.get('strength', 1.0)):g}" for a in loras if a.get("path"))


def open_upload(upload, what: str):
    """An uploaded file (bytes-like, from st.file_uploader) -> PIL image held in memory; None stays None."""
    if upload is None:
        return None
    from PIL import Image, UnidentifiedImageError

    data = upload.getvalue() if hasattr(upload, "getvalue") else bytes(upload)
    name = getattr(upload, "name", "the upload")
    if len(data) > MAX_UPLOAD_BYTES:
        raise NewbieError(f"{what} '{name}' is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}")
    try:
        image = Image.open(io.BytesIO(data))
        w, h = image.size
        if w * h > MAX_UPLOAD_PIXELS or max(w, h) > MAX_UPLOAD_SIDE:
            raise NewbieError(
                f"{what} '{name}' is {w}x{h}; images up to {MAX_UPLOAD_PIXELS} pixels and "
                f"{MAX_UPLOAD_SIDE} per side are read"
            )
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise NewbieError(f"{what} '{name}' is not a readable image") from None
    return image


def confine_loras(text: str, data_dir) -> str:
    """For a page served beyond this machine: LoRA lines name adapters under DATA/adapters/ only (the API's
    rule, serve/inputs.py), so a visitor cannot make the page open, or probe for, any file on the server.
    Returns the lines with the checked paths."""
    from newbie.serve.errors import ApiError
    from newbie.serve.inputs import adapter_path

    lines = []
    for name, strength in parse_lora_lines(text):
        try:
            lines.append(f"{adapter_path(data_dir, name)}:{strength:g}")
        except ApiError as e:
            raise NewbieError(e.message.replace(str(data_dir), "DATA")) from None
    return "\n".join(lines)


def workflow_kwargs(values: Mapping) -> dict:
    """The widget values -> loras/fuse_loras/init_image/strength/mask/mask_feather/hires for request().
    Only what is switched on is passed, so an empty expander is plain text-to-image."""
    out: dict = {}
    loras = parse_lora_lines(values.get("loras") or "")
    if loras:
        out["loras"] = loras
        out["fuse_loras"] = bool(values.get("fuse_loras"))
    init_image = values.get("init_image")
    if init_image is None and values.get("init_image_path"):
        init_image = values["init_image_path"]
    mask = values.get("mask")
    if mask is None and values.get("mask_path"):
        mask = values["mask_path"]
    if mask is not None and init_image is None:
        raise NewbieError("a mask needs an init image (upload the picture to inpaint)")
    if init_image is not None:
        out["init_image"] = init_image
        out["strength"] = float(values.get("strength", DEFAULTS.strength))
    if mask is not None:
        out["mask"] = mask
        out["mask_feather"] = int(values.get("mask_feather", DEFAULTS.mask_feather))
    if values.get("hires"):
        exact = values.get("hires_recipe")
        out["hires"] = dict(exact) if exact else float(values.get("hires_scale") or DEFAULTS.hires_scale)
    return out


def workflows_from_recipe(recipe: Recipe) -> dict[str, object]:
    """Widget state that makes the recipe's image again. Input images come back as their recorded paths (an
    in-memory upload has none: it must be uploaded again); hires keeps the recipe's exact target."""
    hires = dict(recipe.hires) if recipe.hires else None
    scale = DEFAULTS.hires_scale
    if hires and recipe.width:
        nearest = min(HIRES_SCALES, key=lambda s: abs(s - hires.get("width", 0) / recipe.width))
        scale = nearest
    return {
        "hires": hires is not None,
        "hires_scale": scale,
        "hires_recipe": hires,
        "loras": lora_lines(recipe.loras or []),
        "fuse_loras": bool(recipe.fuse_loras),
        "strength": DEFAULTS.strength if recipe.strength is None else float(recipe.strength),
        "mask_feather": DEFAULTS.mask_feather if recipe.mask_feather is None else int(recipe.mask_feather),
        "init_image_path": recipe.init_image or "",
        "mask_path": recipe.mask or "",
    }
