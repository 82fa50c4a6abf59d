"""What the API accepts: the engine's own checks (Pipeline.request) plus the server's limits, which keep
one request from taking the GPU or the memory for itself."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from newbie.errors import NewbieError
from newbie.pipeline.request import Settings
from newbie.serve.errors import ApiError
from newbie.serve.inputs import INPUT_FILES, decode_image, lora_arguments
from newbie.serve.schemas import GenerationParams


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
        "negative": req.negative,
        "n": len(req.prompts),
        "seed": req.seeds[0],
        "steps": req.steps,
        "cfg": req.cfg,
        "sampler": req.sampler,
        "shift": req.shift,
        "width": req.width,
        "height": req.height,
        "cfg_trunc": req.cfg_trunc,
        "renorm_cfg": req.renorm_cfg,
        "fuse_loras": req.fuse_loras,
        "init_image": image.sha256 if image else None,
        "strength": image.strength if image else None,
        "mask": image.mask_sha256 if has_mask else None,
        "mask_feather": image.feather if has_mask else None,
        "hires": dataclasses.asdict(req.hires) if req.hires else None,  # resolved: target size, steps
        "noise": req.noise,
        "schedule": req.schedule,
        "total_steps": req.total_steps,  # both passes with hires: what progress counts to
    }


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    try:
        w, h = size.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise ApiError(
            400,
            f"size must look like WIDTHxHEIGHT (e.g. 1024x1024) or 'auto', got '{size[:40]}'",
            "invalid_size",
            "size",
        ) from None


def check_prompt(text: str, name: str, limits: ApiLimits) -> None:
    from newbie.prompts import PromptError, parse

    if len(text) > limits.max_prompt_chars:
        raise ApiError(
            400,
            f"{name} is {len(text)} characters; the limit is {limits.max_prompt_chars}",
            "prompt_too_long",
            name,
        )
    try:
        parse(text)
    except PromptError as e:
        raise ApiError(
            422,
            f"{name} is not valid XML: line {e.line}, column {e.column}: {e.message}",
            "invalid_xml",
            name,
        ) from None


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


def validate(body: GenerationParams, validator, limits: ApiLimits, data_dir: Path) -> tuple[dict, dict]:
    """Body -> (the resolved parameters that go into the queue (defaults filled, seed fixed), the decoded
    input images to keep in the job's folder), or ApiError."""
    if not body.prompt.strip():
        raise ApiError(400, "prompt is empty", "empty_prompt", "prompt")
    check_prompt(body.prompt, "prompt", limits)
    if body.negative:
        check_prompt(body.negative, "negative", limits)
    if not 1 <= body.n <= limits.max_n:
        raise ApiError(400, f"n must be between 1 and {limits.max_n}, got {body.n}", "invalid_n", "n")
    if body.steps is not None and not 1 <= body.steps <= limits.max_steps:
        raise ApiError(
            400, f"steps must be between 1 and {limits.max_steps}, got {body.steps}", "invalid_steps", "steps"
        )
    if body.shift is not None and not (math.isfinite(body.shift) and body.shift > 0):
        raise ApiError(400, f"shift must be > 0, got {body.shift}", "invalid_shift", "shift")
    if body.cfg_trunc is not None and not 0 <= body.cfg_trunc <= 1:
        raise ApiError(
            400, f"cfg_trunc must be between 0 and 1, got {body.cfg_trunc}", "invalid_cfg_trunc", "cfg_trunc"
        )
    if body.renorm_cfg is not None and body.renorm_cfg < 0:
        raise ApiError(
            400, f"renorm_cfg must be >= 0, got {body.renorm_cfg}", "invalid_renorm_cfg", "renorm_cfg"
        )
    width, height = parse_size(body.size)
    images = {}
    for field, (_, mode) in INPUT_FILES.items():
        text = getattr(body, field)
        if text is not None:  # bigger inputs are allowed: they are resized to the request size
            images[field] = decode_image(text, field, mode, 4 * limits.max_pixels)
    loras = [item.model_dump() for item in body.loras or []]
    settings = Settings(
        prompt=body.prompt,
        negative=body.negative,
        seed=body.seed,
        steps=body.steps,
        cfg=body.cfg,
        sampler=body.sampler,
        shift=body.shift,
        width=width,
        height=height,
        batch=body.n,
        cfg_trunc=body.cfg_trunc,
        renorm_cfg=body.renorm_cfg,
        loras=lora_arguments(data_dir, loras),
        fuse_loras=body.fuse_loras,
        init_image=images.get("init_image"),
        mask=images.get("mask"),
        strength=body.strength,
        mask_feather=body.mask_feather,
        hires=hires_argument(body.hires),
        noise=body.noise,
        schedule=body.schedule,
    )
    try:
        params = validator.resolve(settings)
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
    `images`: the job's kept input images; `data_dir`: where its adapters are (both absent in old jobs)."""
    images = images or {}
    return pipe.request(
        Settings(
            prompt=params["prompt"],
            negative=params["negative"],
            seed=params["seed"],
            steps=params["steps"],
            cfg=params["cfg"],
            sampler=params["sampler"],
            shift=params["shift"],
            width=params["width"],
            height=params["height"],
            batch=params["n"],
            cfg_trunc=params["cfg_trunc"],
            renorm_cfg=params["renorm_cfg"],
            loras=lora_arguments(data_dir, params.get("loras") or []) if data_dir else None,
            fuse_loras=params.get("fuse_loras", False),
            init_image=images.get("init_image"),
            mask=images.get("mask"),
            strength=params.get("strength"),
            mask_feather=params.get("mask_feather"),
            hires=params.get("hires"),
            noise=params.get("noise"),  # absent in jobs queued before it existed: the default
            schedule=params.get("schedule"),
        )
    )
