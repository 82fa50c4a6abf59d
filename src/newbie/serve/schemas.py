"""Request and response bodies. The generation body is derived from the request schema (Settings in
pipeline/request.py): strict types here, the engine's rules in resolve(), the server's own limits (largest
side, images per request, body size) in limits.py, because they are flags of `newbie serve`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

from newbie.config import SPECS
from newbie.pipeline.request import Settings, model_default


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


# Body names that differ from the Settings fields they fill (every other Settings field has its own name);
# limits.settings_from_body applies this mapping, and a test checks it covers every field.
BODY_NAMES = {"batch": "n", "width": "size", "height": "size"}
# Settings fields whose body form is not the plain value: declared by hand below.
OWN_FORM = ("prompt", "batch", "width", "height", "loras", "init_image", "mask", "hires")
_STRICT = {"int": StrictInt, "float": StrictFloat, "str": StrictStr, "bool": StrictBool}


def _value_field(name: str) -> tuple:
    """A Settings field as a body field: its strict type (a string for "5" is a 422), its default, and its
    bounds and choices shown in the schema. The bounds are checked by the engine's own rules, so a bad value
    gets the same message here as through the CLI or Python (a 422 naming the field)."""
    rule = Settings.rule(name)
    default = Settings.__dataclass_fields__[name].default
    extra: dict = {}
    if rule.lo is not None:
        extra["minimum"] = rule.lo
    if rule.hi is not None:
        extra["maximum"] = rule.hi
    if rule.choices:
        extra["enum"] = list(rule.choices)
    shown = rule.model and f"the model's, {model_default(name, SPECS['newbie-exp0.1'])} for NewBie"
    shown = shown or rule.default_text
    help = rule.help + (f" (default: {shown})" if shown else "")
    kind = _STRICT[rule.kind]
    return (
        kind if default is not None else kind | None,
        Field(default, description=help, json_schema_extra=extra),
    )


_BATCH = Settings.rule("batch")

GenerationParams = create_model(
    "GenerationParams",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    prompt=(StrictStr, Field(description="text, danbooru tags or an XML structured prompt")),
    n=(
        StrictInt,
        Field(
            1,
            description="number of images (one batch; seeds seed, seed+1, ...)",
            json_schema_extra={"minimum": _BATCH.lo, "maximum": _BATCH.hi},
        ),
    ),
    size=(
        StrictStr | None,
        Field(None, description="WIDTHxHEIGHT in multiples of 16, or 'auto' for the model default"),
    ),
    # artist workflows (docs/workflows.md)
    loras=(
        list[LoraRef] | None,
        Field(
            None,
            description="LoRA/LoKr adapters from the server's DATA/adapters/",
            json_schema_extra={"maxItems": Settings.rule("loras").hi},
        ),
    ),
    init_image=(StrictStr | None, Field(None, description="img2img/inpainting input: base64 PNG or JPEG")),
    mask=(
        StrictStr | None,
        Field(None, description="inpainting mask, base64 PNG or JPEG of init_image's size; white = repaint"),
    ),
    hires=(
        StrictBool | HiresParams | None,
        Field(None, description="hires pass: true for 2x with the defaults, or its settings"),
    ),
    **{name: _value_field(name) for name in Settings.fields() if name not in OWN_FORM},
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
