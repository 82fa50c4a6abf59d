"""Image inputs of a request (img2img, inpainting, hires): parsing, validation, and their pure math.

The sampling side (noising the input latent, keeping the unmasked area on its path) is newbie.sampling.loop;
the order of the passes is Pipeline._run. Here: reading and fitting the input image and mask, the feathered
mask, the hires target and its upscalers, compositing the original pixels back under the mask (so every
pixel outside the mask is kept exactly), and the recipe fields that re-make all of it.
Hires: generate at the requested (trained) size, upscale the latents (bicubic) or the pixels (Lanczos, then
VAE encode), and finish with a short img2img pass at the target size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from newbie.errors import NewbieError


@dataclass(frozen=True)
class ImageDefaults:
    strength: float = 0.6  # img2img: noise level the input is pushed to (0 keeps it, 1 ignores it)
    inpaint_strength: float = 1.0  # inpainting repaints the masked area from pure noise by default
    mask_feather: int = 8  # pixels over which the mask ramps up inside its edge
    hires_scale: float = 2.0
    hires_upscaler: str = "pixel"  # Lanczos + VAE encode: sharper start than bicubic latents, so 0.5 suffices
    hires_strength: float = 0.5


DEFAULTS = ImageDefaults()
UPSCALERS = ("latent", "pixel")
HIRES_SEED_OFFSET = 0x9E3779B97F4A7C15  # the hires pass draws its own noise, not the base image's again


@dataclass
class ImageInput:
    """The conditioning image of a request (img2img/inpainting)."""

    strength: float
    image: object = None  # PIL RGB input as given; resized to the request size by attach()
    mask_image: object = None  # PIL "L" mask as given (white = repaint)
    feather: int = 0
    path: str = ""  # file it came from ("" for in-memory images)
    sha256: str = ""  # of the decoded RGB pixels, so a re-encoded copy of the same pixels matches
    mask_path: str = ""
    mask_sha256: str = ""
    pixels: Tensor | None = None  # (1, 3, H, W) in [0, 1] at the request size
    mask: Tensor | None = None  # (1, 1, H, W) feathered, 1 = repaint, exactly 0 outside the user's mask


@dataclass(frozen=True)
class HiresSpec:
    width: int  # target size of the final image
    height: int
    upscaler: str = DEFAULTS.hires_upscaler
    strength: float = DEFAULTS.hires_strength
    steps: int = 0  # steps of the second pass


# -- reading inputs --


def read_image(source, mode: str, what: str):
    """A path or PIL image -> (PIL image in `mode`, path string or "")."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert(mode), ""
    path = Path(source).expanduser()
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert(mode), str(path)
    except FileNotFoundError:
        raise NewbieError(f"{path}: no such {what}") from None
    except (OSError, UnidentifiedImageError) as e:
        raise NewbieError(f"{path}: not a readable {what} ({e})") from None


def pixels_sha256(image) -> str:
    h = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def image_input(
    init_image=None, mask=None, strength: float | None = None, mask_feather: int | None = None
) -> ImageInput | None:
    """Validate the image arguments of a request; None for plain text-to-image."""
    if init_image is None:
        for value, flag in ((mask, "a mask"), (strength, "a strength"), (mask_feather, "a mask feather")):
            if value is not None:
                raise NewbieError(f"{flag} needs an input image (init_image / --init-image)")
        return None
    image, path = read_image(init_image, "RGB", "input image")
    if strength is None:
        strength = DEFAULTS.inpaint_strength if mask is not None else DEFAULTS.strength
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise NewbieError(f"strength must be a number in [0, 1], got {strength}")
    out = ImageInput(strength=float(strength), image=image, path=path, sha256=pixels_sha256(image))
    if mask is not None:
        mask_image, out.mask_path = read_image(mask, "L", "mask image")
        if mask_image.size != image.size:
            raise NewbieError(
                f"mask is {mask_image.width}x{mask_image.height} but the input image is "
                f"{image.width}x{image.height}; they must match"
            )
        feather = DEFAULTS.mask_feather if mask_feather is None else mask_feather
        if isinstance(feather, float) and feather.is_integer():  # JSON clients send 8.0
            feather = int(feather)
        if not isinstance(feather, int) or not 0 <= feather <= 256:
            raise NewbieError(f"mask feather must be a whole number of pixels in [0, 256], got {feather}")
        out.mask_image, out.mask_sha256, out.feather = mask_image, pixels_sha256(mask_image), feather
    elif mask_feather is not None:
        raise NewbieError("a mask feather needs a mask (mask / --mask)")
    return out


def request_size(
    image: ImageInput | None, width: int | None, height: int | None, default: tuple[int, int], max_side: int
) -> tuple[int, int]:
    """Size of a request: given sides win; otherwise the input image's size (aspect kept, floored to multiples
    of 16, shrunk to fit max_side); otherwise the model's default."""
    if image is None:
        return width or default[0], height or default[1]
    iw, ih = image.image.size
    if width and height:
        return width, height
    if width:
        return width, _side(width * ih / iw)
    if height:
        return _side(height * iw / ih), height
    fit = min(1.0, max_side / max(iw, ih))
    return _side(iw * fit), _side(ih * fit)


def _side(x: float) -> int:
    return max(16, int(x) // 16 * 16)


def to_tensor(image) -> Tensor:
    """PIL -> (1, C, H, W) float32 in [0, 1]; k/255 maps back to the same byte in to_pil."""
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


def feather(mask: Tensor, radius: int) -> Tensor:
    """Binary (1, 1, H, W) -> a ramp from 1/radius at the mask's edge to 1 at `radius` pixels inside it, and
    exactly 0 outside: the mean of the mask eroded 0..radius-1 times (3x3). Eroding (not blurring) keeps the
    feather inside the mask, so no pixel the user left unmasked is touched."""
    if radius <= 0:
        return mask
    total, m = torch.zeros_like(mask), mask
    for _ in range(radius):
        total += m
        m = -F.max_pool2d(-m, 3, stride=1, padding=1)  # erosion; the image border does not erode
    return total / radius


def attach(req, image: ImageInput | None, hires, max_side: int):
    """Fit the image inputs to the request size and set req.image / req.hires."""
    from PIL import Image

    if image is not None:
        picture = image.image
        if picture.size != (req.width, req.height):
            req.warnings.append(
                f"input image {picture.width}x{picture.height} resized to {req.width}x{req.height}"
            )
            picture = picture.resize((req.width, req.height), Image.LANCZOS)
        image.pixels = to_tensor(picture)
        if image.mask_image is not None:
            binary = (
                to_tensor(image.mask_image.resize((req.width, req.height), Image.NEAREST)) >= 0.5
            ).float()
            if not bool(binary.any()):
                req.warnings.append("the mask is all black: nothing is repainted")
            image.mask = feather(binary, image.feather)
    req.image = image
    req.hires = hires_spec(hires, req.width, req.height, req.steps, max_side)
    if req.hires is not None and image is not None and image.mask is not None:
        raise NewbieError("hires is not available with inpainting; inpaint at the final size instead")
    return req


def hires_spec(value, width: int, height: int, steps: int, max_side: int) -> HiresSpec | None:
    """None/False: off. True: defaults. A number or 'SCALE': scale factor. 'WxH': target size. A dict with
    scale or width/height, and optional upscaler, strength, steps. A HiresSpec is checked as is."""
    if value is None or value is False:
        return None
    fields: dict = {}
    if value is True:
        fields["scale"] = DEFAULTS.hires_scale
    elif isinstance(value, HiresSpec):
        fields = dataclasses.asdict(value)
    elif isinstance(value, dict):
        fields = dict(value)
    elif isinstance(value, (int, float)):
        fields["scale"] = value
    elif isinstance(value, str):
        fields.update(parse_hires_text(value))
    else:
        raise NewbieError(f"hires must be true, a scale, 'WIDTHxHEIGHT' or a dict, got {value!r}")
    unknown = set(fields) - {"scale", "width", "height", "upscaler", "strength", "steps"}
    if unknown:
        raise NewbieError(f"unknown hires setting(s): {', '.join(sorted(unknown))}")
    if fields.get("width") and fields.get("height"):
        tw, th = int(fields["width"]), int(fields["height"])
    else:
        scale = fields.get("scale", DEFAULTS.hires_scale)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 1 <= scale <= 8):
            raise NewbieError(f"hires scale must be a number in [1, 8], got {scale}")
        tw, th = int(width * scale / 16 + 0.5) * 16, int(height * scale / 16 + 0.5) * 16  # nearest, halves up
    for side, name in ((tw, "width"), (th, "height")):
        if side % 16 or side < 16:
            raise NewbieError(f"hires {name} {side} is not a positive multiple of 16")
        if side > max_side:
            raise NewbieError(f"hires {name} {side} is larger than {max_side}")
    upscaler = fields.get("upscaler") or DEFAULTS.hires_upscaler
    if upscaler not in UPSCALERS:
        raise NewbieError(f"unknown hires upscaler '{upscaler}' (choose from {', '.join(UPSCALERS)})")
    strength = fields.get("strength")
    strength = DEFAULTS.hires_strength if strength is None else strength
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise NewbieError(f"hires strength must be a number in [0, 1], got {strength}")
    hsteps = fields.get("steps") or max(1, steps // 2)
    if not isinstance(hsteps, int) or hsteps < 1:
        raise NewbieError(f"hires steps must be >= 1, got {hsteps}")
    return HiresSpec(tw, th, upscaler, float(strength), hsteps)


def parse_hires_text(text: str) -> dict:
    t = text.strip().lower()
    try:
        if "x" in t:
            w, h = t.split("x")
            return {"width": int(w), "height": int(h)}
        return {"scale": float(t)}
    except ValueError:
        raise NewbieError(f"hires must be a scale like 1.5 or a size like 2048x2048, got '{text}'") from None


# -- hires upscalers --


def upscale_latents(latents: Tensor, height: int, width: int) -> Tensor:
    """Bicubic resize in latent space (the "latent" upscaler): no VAE round trip."""
    return F.interpolate(latents, size=(height, width), mode="bicubic", align_corners=False)


def upscale_pixels(images: list, width: int, height: int) -> Tensor:
    """Lanczos resize of decoded images (the "pixel" upscaler) -> (B, 3, H, W) in [0, 1], ready to encode."""
    from PIL import Image

    return torch.cat([to_tensor(im.resize((width, height), Image.LANCZOS)) for im in images])


def composite(req, images: Tensor) -> Tensor:
    """Inpainting: the original pixels back under the feathered mask (exactly where the mask is 0)."""
    cond: ImageInput | None = req.image
    if cond is None or cond.mask is None:
        return images
    mask, original = cond.mask.to(images.device), cond.pixels.to(images.device)
    return mask * images + (1 - mask) * original


def total_steps(recipe) -> int:
    """Steps of a recipe's whole run (both passes with hires), for progress bars."""
    return recipe.steps + (recipe.hires["steps"] if recipe.hires else 0)


# -- recipes --


def recipe_fields(req) -> dict:
    out: dict = {}
    cond: ImageInput | None = req.image
    if cond is not None:
        out.update(init_image=cond.path, init_image_sha256=cond.sha256, strength=cond.strength)
        if cond.mask is not None:
            out.update(mask=cond.mask_path, mask_sha256=cond.mask_sha256, mask_feather=cond.feather)
    if req.hires is not None:
        out["hires"] = dataclasses.asdict(req.hires)
    return out


def remake_kwargs(recipe, init_image=None, mask=None) -> dict:
    """generate() arguments for the image part of a recipe; the inputs must still hold the same pixels."""
    out: dict = {"hires": recipe.hires}
    if recipe.init_image_sha256:
        out["init_image"] = _same_pixels(
            init_image, recipe.init_image, recipe.init_image_sha256, "RGB", "input image", "--init-image"
        )
        out["strength"] = recipe.strength
    if recipe.mask_sha256:
        out["mask"] = _same_pixels(mask, recipe.mask, recipe.mask_sha256, "L", "mask image", "--mask")
        out["mask_feather"] = recipe.mask_feather
    return out


def _same_pixels(given, recorded: str, sha: str, mode: str, what: str, flag: str):
    source = given if given is not None else recorded
    if not source:
        raise NewbieError(f"the recipe's {what} was not a file; give it again with {flag}")
    image, _ = read_image(source, mode, what)
    if pixels_sha256(image) != sha:
        raise NewbieError(
            f"{source}: its pixels differ from the recipe's {what} (sha256 {pixels_sha256(image)[:12]} "
            f"!= {sha[:12]}); give the original with {flag}"
        )
    return source
