"""The server's own limits, which keep one request from taking the GPU or the memory for itself (largest side
and pixels, images, steps, prompt length, body size, queue), and the body <-> Settings <-> queued parameters
translations. Every rule of the request itself is the engine's (pipeline/request.py: resolve)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from newbie.errors import NewbieError
from newbie.pipeline.request import SettingError, Settings, carried_fields, check, parse_size
from newbie.serve.errors import ApiError
from newbie.serve.inputs import INPUT_FILES, decode_image, lora_arguments
from newbie.serve.schemas import BODY_NAMES, OWN_FORM, GenerationParams


@dataclass(frozen=True)
class ApiLimits:
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 100
    max_n: int = 4
    max_prompt_chars: int = 16_384
    # img2img/inpainting images come in the body as base64: room for two 2048x2048 PNGs
    max_body_bytes: int = 32 * 1024 * 1024
    max_queue: int = 1000  # queued jobs; past this a new job gets 503 instead of waiting for hours
    # -- server limits (the transport, not the request's values) --
    # request bodies held in memory at once, all connections together: 200 slow clients cannot hold 200
    # bodies; past this a new body gets 503 at once (and a slow one 408 after body_timeout_s)
    max_body_buffer: int = 256 * 1024 * 1024
    body_timeout_s: float = 60.0  # the whole body must arrive within this
    max_expands: int = 4  # /v1/prompts/expand calls running or waiting; past this 503
    retention_s: float = 0.0  # finished jobs and their images are deleted this long after; 0: kept


class PipelineValidator:
    """Resolves a request with the engine's own checks (Pipeline.request): defaults filled, seed drawn.
    Thread-safe: request() reads the spec and touches no tensors, so the API threads share the worker's
    pipeline."""

    def __init__(self, pipe):
        self.pipe = pipe

    def resolve(self, settings: Settings) -> dict:
        return resolved(self.pipe.request(settings))


def resolved(req) -> dict:
    """The engine's Request as the queued parameters (everything a worker needs to make the same images).
    Input images are named by their pixel hash (the files are in the job's folder); validate() replaces the
    adapters' server paths by the names the client gave."""

    image, has_mask = req.image, req.image is not None and req.image.mask is not None
    return {
        "prompt": req.prompts[0],
        "n": len(req.prompts),
        "seed": req.seeds[0],
        **{name: getattr(req, name) for name in carried_fields()},
        "fuse_loras": req.fuse_loras,
        "init_image": image.sha256 if image else None,
        "strength": image.strength if image else None,
        "mask": image.mask_sha256 if has_mask else None,
        "mask_feather": image.feather if has_mask else None,
        "hires": dataclasses.asdict(req.hires) if req.hires else None,  # resolved: target size, steps
        "total_steps": req.total_steps,  # both passes with hires: what progress counts to
    }


def check_prompt(text: str, name: str, limits: ApiLimits) -> None:
    from newbie.prompts import check_xml

    if len(text) > limits.max_prompt_chars:
        raise ApiError(
            400,
            f"{name} is {len(text)} characters; the limit is {limits.max_prompt_chars}",
            "prompt_too_long",
            name,
        )
    try:
        check_xml(text, name)
    except NewbieError as e:
        raise ApiError(422, str(e), "invalid_xml", name) from None


def hires_argument(hires):
    if hires is None or isinstance(hires, bool):
        return hires
    return hires.model_dump(exclude_none=True)


def check_side(w: int, h: int, what: str, limits: ApiLimits) -> None:
    if max(w, h) > limits.max_side:
        raise ApiError(
            400, f"{what} {w}x{h}: the server's largest side is {limits.max_side}", "invalid_size", "size"
        )
    if w * h > limits.max_pixels:
        raise ApiError(
            400,
            f"{what} {w}x{h} is {w * h} pixels; the server's limit is {limits.max_pixels}",
            "invalid_size",
            "size",
        )


def settings_from_body(body: GenerationParams, images: dict, loras) -> Settings:
    """A request body -> Settings: every field of the same name, plus the body's own forms (n, size, adapters
    by name, decoded images, hires)."""
    width, height = parse_size(body.size)
    same = {name: getattr(body, name) for name in Settings.fields() if name not in OWN_FORM}
    return Settings(
        prompt=body.prompt,
        batch=getattr(body, BODY_NAMES["batch"]),
        width=width,
        height=height,
        loras=loras,
        init_image=images.get("init_image"),
        mask=images.get("mask"),
        hires=hires_argument(body.hires),
        **same,
    )


def validate(body: GenerationParams, validator, limits: ApiLimits, data_dir: Path) -> tuple[dict, dict]:
    """Body -> (the resolved parameters that go into the queue (defaults filled, seed fixed), the decoded
    input images to keep in the job's folder), or ApiError: 422 naming the field for a bad setting (the
    engine's own message), 400 for a server limit or an input that cannot be used."""
    if not body.prompt.strip():
        raise ApiError(400, "prompt is empty", "empty_prompt", "prompt")
    check_prompt(body.prompt, "prompt", limits)
    if body.negative:
        check_prompt(body.negative, "negative", limits)
    if not 1 <= body.n <= limits.max_n:
        raise ApiError(400, f"n must be between 1 and {limits.max_n}, got {body.n}", "invalid_n", "n")
    if body.steps is not None and body.steps > limits.max_steps:
        raise ApiError(
            400, f"steps {body.steps}: the server's limit is {limits.max_steps}", "invalid_steps", "steps"
        )
    images, loras = {}, [item.model_dump() for item in body.loras or []]
    try:
        # every setting is checked before an image is decoded or an adapter looked up
        settings = settings_from_body(body, images, None)
        check(settings)
        for field, (_, mode) in INPUT_FILES.items():
            text = getattr(body, field)
            if text is not None:  # bigger inputs are allowed: they are resized to the request size
                images[field] = decode_image(text, field, mode, 4 * limits.max_pixels)
        params = validator.resolve(settings_from_body(body, images, lora_arguments(data_dir, loras)))
    except SettingError as e:
        param = {"width": "size", "height": "size"}.get(e.field, e.field)
        raise ApiError(422, str(e), f"invalid_{param}", param) from None
    except NewbieError as e:
        raise ApiError(400, str(e), "invalid_request") from None
    check_side(params["width"], params["height"], "size", limits)
    if params.get("hires"):
        check_side(params["hires"]["width"], params["hires"]["height"], "hires size", limits)
    if params.get("total_steps", 0) > limits.max_steps:
        raise ApiError(
            400,
            f"steps of both hires passes are {params['total_steps']}; the limit is {limits.max_steps}",
            "invalid_steps",
            "steps",
        )
    params["loras"] = loras  # names under DATA/adapters/, never server paths: params are shown to clients
    return params, images


def to_request(pipe, params: dict, data_dir: Path | None = None, images: dict | None = None):
    """Queued parameters -> the engine's Request (the same every time: the seed is in the parameters).
    `images`: the job's kept input images; `data_dir`: where its adapters are (both absent in old jobs).
    A field absent from an older job's parameters takes its default."""
    images = images or {}
    return pipe.request(
        Settings(
            prompt=params["prompt"],
            seed=params["seed"],
            batch=params["n"],
            loras=lora_arguments(data_dir, params.get("loras") or []) if data_dir else None,
            fuse_loras=params.get("fuse_loras", False),
            init_image=images.get("init_image"),
            mask=images.get("mask"),
            strength=params.get("strength"),
            mask_feather=params.get("mask_feather"),
            hires=params.get("hires"),
            **{name: params.get(name) for name in carried_fields()},
        )
    )
