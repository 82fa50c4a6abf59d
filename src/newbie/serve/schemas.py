"""Request and response bodies. Types only: the server's limits are checked in limits.py, because they
are flags of `newbie serve` and not part of the schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraRef(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="adapter file or PEFT folder, relative to the server's DATA/adapters/")
    strength: float = Field(1.0, description="multiplier of the adapter's weight change, in [-10, 10]")


class HiresParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    scale: float | None = Field(None, description="target size = size x scale (default 2), in [1, 8]")
    upscaler: Literal["pixel", "latent"] | None = Field(None, description="default pixel")
    strength: float | None = Field(None, description="noise level of the second pass (default 0.5)")
    steps: int | None = Field(None, description="steps of the second pass (default steps / 2)")


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(description="text, danbooru tags or an XML structured prompt")
    negative: str | None = Field(None, description="negative prompt (default: the model's)")
    n: int = Field(1, description="number of images (one batch; seeds seed, seed+1, ...)")
    size: str | None = Field(
        None, description="WIDTHxHEIGHT in multiples of 16, or 'auto' for the model default"
    )
    seed: int | None = Field(
        None, description="base seed; drawn at acceptance when omitted, so a retry is identical"
    )
    steps: int | None = None
    cfg: float | None = Field(None, description="classifier-free guidance scale")
    sampler: str | None = Field(None, description="euler, midpoint, dpmpp_2m or res_multistep")
    shift: float | None = None
    cfg_trunc: float | None = Field(None, description="CFG only while t < cfg_trunc (t: 0 = noise, 1 = data)")
    renorm_cfg: float | None = Field(
        None, description="cap the guided norm at this multiple of the conditional one"
    )
    # artist workflows (docs/workflows.md)
    loras: list[LoraRef] | None = Field(
        None, description="LoRA/LoKr adapters from the server's DATA/adapters/"
    )
    fuse_loras: bool = Field(False, description="merge the adapters into the weights instead of hooks")
    init_image: str | None = Field(None, description="img2img/inpainting input: base64 PNG or JPEG")
    strength: float | None = Field(
        None, description="img2img noise level in [0, 1] (default 0.6; 1.0 with a mask)"
    )
    mask: str | None = Field(
        None, description="inpainting mask, base64 PNG or JPEG of init_image's size; white = repaint"
    )
    mask_feather: int | None = Field(None, description="pixels the mask ramps up inside its edge (default 8)")
    hires: bool | HiresParams | None = Field(
        None, description="hires pass: true for 2x with the defaults, or its settings"
    )
    noise: Literal["newbie", "comfy"] | None = Field(
        None, description="initial noise: newbie (per image, default) or comfy (ComfyUI's for the same seed)"
    )
    schedule: Literal["uniform", "simple"] | None = Field(
        None, description="sigma grid: uniform (default) or simple (ComfyUI's 'simple' scheduler)"
    )


class ImageGenerationRequest(GenerationParams):
    # OpenAI clients send fields that mean nothing here (quality, style, user, ...): accept and ignore them.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = Field(None, description="ignored: the server runs the model it was started with")
    response_format: Literal["b64_json", "url"] = "b64_json"


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    seed: int


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    job_id: str


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    step: int = Field(0, description="sampler steps finished (while running; = steps when done)")
    steps: int
    n: int
    created: float
    started: float | None = None
    finished: float | None = None
    seconds: float | None = Field(None, description="generation time of the whole job")
    error: str | None = None
    cancel_requested: bool = False
    images: list[str] = Field(default_factory=list, description="image URLs, when done")
    params: dict = Field(description="the validated request, seed included")


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model: str
    workers: int
    workers_alive: int
    queued: int
    running: int
    reason: str | None = Field(None, description="why the server is degraded (absent when ok)")


class ExpandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    text: str = Field(description="a sentence or a danbooru tag list (an XML prompt is returned as parsed)")
    llm: bool = Field(True, description="let the model's Gemma write the XML; false: the rule-based expander")
    seed: int | None = Field(None, description="sample with this seed; omitted: greedy (deterministic)")
    temperature: float = Field(0.7, gt=0, le=2, description="sampling temperature, with a seed")
    max_new_tokens: int = Field(512, ge=1, le=1024, description="token budget of the answer")


class ExpandWarning(BaseModel):
    code: str = Field(description="lint code, e.g. NB103 (docs/prompts.md)")
    message: str
    character: str | None = None
    line: int | None = None
    column: int | None = None


class ExpandResponse(BaseModel):
    xml: str = Field(description="the XML prompt, in the builder's canonical layout; always parses")
    warnings: list[ExpandWarning] = Field(default_factory=list, description="lint warnings of the XML")
    source: Literal["llm", "rules", "input"] = Field(
        description="llm: Gemma wrote it; rules: the rule-based expander (llm false, or no Gemma in this "
        "process); input: the text was XML already"
    )
    note: str = ""
    new_tokens: int | None = Field(None, description="tokens Gemma generated (llm only)")
    tokens_per_s: float | None = None
    seconds: float | None = Field(None, description="time of the whole expansion")
