"""The one request schema: what a user asks for (`Settings`) and what the engine runs (`Request`).

Each Settings field declares once, in its `Rule`, its type, bounds or choices, its help text and which model
default None stands for. `resolve(settings, spec)` holds every engine rule; the doors are derived from the
rules: the CLI flags (cli/request_args.py), the API body (serve/schemas.py), the UI form (ui/form.py) and the
diffusers-style keywords (diffusers_args.py, which keeps diffusers' names in a mapping a test checks). A
`Recipe` (pipeline/recipe.py) is one image of a `Request` plus provenance.

No torch here: the CLI builds its parser from these rules on every call. resolve() imports img2img lazily.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
from dataclasses import MISSING, dataclass, field
from typing import TYPE_CHECKING

from newbie.config import NOISE_NAMES, SAMPLER_NAMES, SCHEDULE_NAMES, ModelSpec
from newbie.errors import NewbieError

if TYPE_CHECKING:
    import torch

    from newbie.pipeline.img2img import HiresSpec, ImageInput

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range
SIZE_MULTIPLE = 16  # VAE downscale 8 x patch size 2


class SettingError(NewbieError):
    """A bad value of one Settings field; `field` names it (the API answers 422 with it as `param`)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rule:
    """How one Settings field is checked and shown.

    kind: int, float, str, bool, prompt (a string or a list of them), list (with at most `hi` entries) or
    any (checked where it is used: images and hires, by img2img). lo/hi: inclusive bounds, None = open.
    model: the SamplingDefaults attribute that None stands for (the Request and the Recipe hold the resolved
    value under the same name: Sampled). default_text: what None means when it is not a model default.
    """

    kind: str
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    model: str | None = None
    default_text: str = ""

    def bounds_text(self) -> str:
        if self.kind == "list":
            return f"at most {int(self.hi)} entries"
        if self.lo is not None and self.hi is not None:
            return f"between {_num(self.lo)} and {_num(self.hi)}"
        return f">= {_num(self.lo)}" if self.lo is not None else f"<= {_num(self.hi)}"


def _num(x) -> str:
    """A bound or value as a person writes it: 18446744073709551615, 0.25, 1e+308."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e21 else f"{x:g}"


def _f(rule: Rule, default=None):
    return field(default=default, metadata={"rule": rule})


def _sampling(kind: str, help: str, lo=None, hi=None, choices=(), *, name: str) -> object:
    return _f(Rule(kind, help, lo, hi, choices, model=name))


@dataclass(kw_only=True)
class Settings:
    """Everything one generate call can ask for. None means "the model's default" (newbie/config.py).
    Each field's rule (type, bounds, help): `Settings.rule(name)`; `resolve()` applies them."""

    prompt: str | list[str] = _f(
        Rule("prompt", "text, danbooru tags or an XML prompt (in Python also a list: one image each)"),
        MISSING,
    )
    negative: str | None = _sampling("str", "negative prompt", name="negative")
    seed: int | None = _f(
        Rule("int", "the first image's seed; image i uses seed + i", 0, MAX_SEED, default_text="random")
    )
    steps: int | None = _sampling("int", "sampler steps", 1, 1000, name="steps")
    cfg: float | None = _sampling("float", "classifier-free guidance scale (1 = off)", 0, 100, name="cfg")
    sampler: str | None = _sampling("str", "sampler", choices=SAMPLER_NAMES, name="sampler")
    shift: float | None = _sampling("float", "time shift of the sigma schedule", 0.01, 100, name="shift")
    width: int | None = _sampling("int", "image width, a multiple of 16", SIZE_MULTIPLE, name="width")
    height: int | None = _sampling("int", "image height, a multiple of 16", SIZE_MULTIPLE, name="height")
    batch: int = _f(Rule("int", "images per prompt (seeds seed, seed+1, ...)", 1, 64), 1)
    cfg_trunc: float | None = _sampling(
        "float", "apply CFG only while t < this (t: 0 = noise, 1 = data)", 0, 1, name="cfg_trunc"
    )
    renorm_cfg: float | None = _sampling(
        "float",
        "cap the guided norm at this multiple of the conditional one (0 = off)",
        0,
        100,
        name="renorm_cfg",
    )
    loras: list | None = _f(
        Rule("list", "LoRA/LoKr adapters: paths, 'path:strength', (path, strength) or dicts", hi=16)
    )
    fuse_loras: bool = _f(Rule("bool", "add the adapters into the weights instead of hooks"), False)
    init_image: object = _f(Rule("any", "img2img/inpainting input: a path or a PIL image"))
    strength: float | None = _f(
        Rule(
            "float",
            "img2img noise level: 0 keeps the input, 1 ignores it",
            0,
            1,
            default_text="0.6; 1 with a mask",
        )
    )
    mask: object = _f(Rule("any", "inpainting mask of the input's size: white = repaint"))
    mask_feather: int | None = _f(
        Rule("int", "pixels over which the mask fades in, inside its edge", 0, 256, default_text="8")
    )
    hires: object = _f(Rule("any", "hires pass: True, a scale, 'WxH' or a dict (scale or width/height, ...)"))
    noise: str | None = _sampling(
        "str",
        "initial noise: newbie (per image) or comfy (ComfyUI's draw)",
        choices=NOISE_NAMES,
        name="noise",
    )
    schedule: str | None = _sampling(
        "str", "sigma grid: uniform, or simple (ComfyUI's scheduler)", choices=SCHEDULE_NAMES, name="schedule"
    )

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def rule(cls, name: str) -> Rule:
        return cls.__dataclass_fields__[name].metadata["rule"]

    @classmethod
    def build(cls, prompt, negative=None, **kwargs) -> Settings:
        """Settings from a prompt and keyword arguments (the Python API's form); unknown names are refused."""
        if isinstance(prompt, Settings):
            if negative is not None or kwargs:
                raise NewbieError("give Settings or a prompt with keyword settings, not both")
            return prompt
        unknown = set(kwargs) - set(cls.fields())
        if unknown:
            raise NewbieError(f"unknown request setting(s): {', '.join(sorted(unknown))}")
        return cls(prompt=prompt, negative=negative, **kwargs)

    @classmethod
    def from_recipe(cls, recipe, *, loras=None, init_image=None, mask=None) -> Settings:
        """The settings that re-make a recipe (pipeline/recipe.py, a Sampled): its whole batch (so every kernel sees the same shapes), with
        the first seed of that batch. loras/init_image/mask: the recipe's input files where they moved
        (checked against the recorded hashes)."""
        from newbie.adapters import recipe as adapter_recipe
        from newbie.pipeline import img2img

        return cls(
            prompt=recipe.prompt,
            seed=recipe.seed - recipe.batch_index,
            batch=recipe.batch_size,
            **{name: getattr(recipe, name) for name in carried_fields()},
            **adapter_recipe.remake_kwargs(recipe, loras),
            **img2img.remake_kwargs(recipe, init_image, mask),
        )

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


def carried_fields() -> tuple[str, ...]:
    """The sampling fields a Request and a Recipe hold under the Settings name (negative, steps, cfg, ...)."""
    return tuple(f.name for f in dataclasses.fields(Sampled))


def model_default(name: str, spec: ModelSpec):
    """What None means for a field: the model's default, or None where the engine decides later."""
    attr = Settings.rule(name).model
    return getattr(spec.sampling, attr) if attr else Settings.__dataclass_fields__[name].default


@dataclass(kw_only=True)
class Sampled:
    """The resolved sampling values of an image: what a Request runs and a Recipe records, under the names
    of the Settings fields that ask for them (carried_fields(); their rules name the model default)."""

    negative: str
    steps: int
    cfg: float
    sampler: str
    shift: float
    width: int
    height: int
    cfg_trunc: float
    renorm_cfg: float
    noise: str = "newbie"  # config.NOISE_NAMES
    schedule: str = "uniform"  # config.SCHEDULE_NAMES


@dataclass
class Request(Sampled):
    """A validated request with every default filled: what `Pipeline.run` executes.

    prompts/seeds: one entry per image (a batch repeats the prompt with consecutive seeds). image: the
    img2img/inpainting input, fitted to width x height; hires: the second pass, or None.
    """

    prompts: list[str]
    seeds: list[int]
    warnings: list[str] = field(default_factory=list)
    loras: list = field(default_factory=list)  # newbie.adapters.ActiveLora
    fuse_loras: bool = False
    image: ImageInput | None = None
    hires: HiresSpec | None = None
    # Python API only (newbie.diffusers_api), never in a recipe: the starting noise (B, C, H/8, W/8) instead
    # of the seeds' draw; (cond, uncond) TextEmbeds (either None: encoded as usual) instead of encoding.
    initial_latents: torch.Tensor | None = None
    given_embeds: tuple | None = None

    @property
    def uses_cfg(self) -> bool:
        return self.cfg != 1.0

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (both passes with hires): what progress counts to."""
        return self.steps + (self.hires.steps if self.hires else 0)


# -- the rules --


def _type_name(value) -> str:
    return type(value).__name__


def check_value(name: str, value, rule: Rule | None = None) -> None:
    """One field's type, bounds and choices; None (the default) always passes except for the prompt."""
    rule = rule or Settings.rule(name)
    if value is None and rule.kind != "prompt":
        return
    kind = rule.kind
    if kind == "prompt":
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(p, str) for p in items):
            bad = next(p for p in items if not isinstance(p, str))
            raise SettingError(name, f"{name} must be a string or a list of strings, got {bad!r}")
        if not items:
            raise SettingError(name, "no prompt given")
        return
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise SettingError(name, f"{name} must be a whole number, got {value!r} ({_type_name(value)})")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise SettingError(name, f"{name} must be a number, got {value!r} ({_type_name(value)})")
        if not math.isfinite(value):
            raise SettingError(name, f"{name} must be a finite number, got {value}")
    if kind == "str" and not isinstance(value, str):
        raise SettingError(name, f"{name} must be a string, got {value!r} ({_type_name(value)})")
    if kind == "bool" and not isinstance(value, bool):
        raise SettingError(name, f"{name} must be true or false, got {value!r} ({_type_name(value)})")
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise SettingError(name, f"{name} must be a list, got {value!r} ({_type_name(value)})")
        if rule.hi is not None and len(value) > rule.hi:
            raise SettingError(name, f"{name} must have {rule.bounds_text()}, got {len(value)}")
        return
    if rule.choices and value not in rule.choices:
        raise SettingError(name, f"unknown {name} '{value}' (choose from {', '.join(rule.choices)})")
    if kind in ("int", "float"):
        if (rule.lo is not None and value < rule.lo) or (rule.hi is not None and value > rule.hi):
            raise SettingError(name, f"{name} must be {rule.bounds_text()}, got {_num(value)}")


def check_size(name: str, side: int, spec: ModelSpec) -> None:
    if side % SIZE_MULTIPLE or side < SIZE_MULTIPLE:
        raise SettingError(name, f"{name} {side} is not a positive multiple of {SIZE_MULTIPLE}")
    if side > spec.max_side:
        raise SettingError(name, f"{name} {side} is larger than {spec.max_side}")


def check(settings: Settings, spec: ModelSpec | None = None) -> None:
    """Every field's rule and (with a spec) the model's size limits, without reading any input file: what
    the CLI runs before the model loads and the server before it decodes an image. resolve() runs it too."""
    if not isinstance(settings, Settings):
        raise NewbieError(f"expected Settings, got {_type_name(settings)}")
    for name in Settings.fields():
        check_value(name, getattr(settings, name))
    check_prompt_xml(settings)
    for name in ("width", "height"):
        if spec is not None and getattr(settings, name) is not None:
            check_size(name, getattr(settings, name), spec)


def check_prompt_xml(settings: Settings) -> None:
    """The one XML rule of every door: a prompt (or negative prompt) that is XML must parse
    (newbie.prompts.check_xml words it as the server's 422 does)."""
    from newbie.prompts import check_xml

    prompts = [settings.prompt] if isinstance(settings.prompt, str) else list(settings.prompt)
    for text, name, what in [(p, "prompt", "prompt") for p in prompts] + [
        (settings.negative, "negative", "negative prompt")
    ]:
        if isinstance(text, str):
            try:
                check_xml(text, what)
            except NewbieError as e:
                raise SettingError(name, str(e)) from None


def resolve(settings: Settings, spec: ModelSpec, adapters=None) -> Request:
    """Settings -> a validated Request with the model's defaults filled in; every problem is one NewbieError
    (a SettingError naming the field). adapters(loras) -> the resolved adapter list (Pipeline.request passes
    its adapter stack's; without one, the request carries none)."""
    from newbie.pipeline import img2img

    check(settings, spec)
    s, d = settings, spec.sampling
    prompts = [s.prompt] if isinstance(s.prompt, str) else list(s.prompt)
    prompts = [p for p in prompts for _ in range(s.batch)]
    image = img2img.image_input(s.init_image, s.mask, s.strength, s.mask_feather)  # None: text-to-image
    width, height = img2img.request_size(image, s.width, s.height, (d.width, d.height), spec.max_side)
    check_size("width", width, spec)
    check_size("height", height, spec)
    warns = []
    if width * height > spec.trained_pixels or max(width, height) / min(width, height) > spec.max_aspect:
        warns.append(
            f"{width}x{height} is outside the trained area (W*H <= {spec.trained_pixels}, "
            f"aspect <= {spec.max_aspect:g}); expect repeated or broken composition"
        )
    base_seed = secrets.randbelow(2**32) if s.seed is None else int(s.seed)
    if base_seed + len(prompts) - 1 > MAX_SEED:
        raise SettingError("seed", f"seed {base_seed} + {len(prompts) - 1} images is past 2^64-1")
    value = {
        name: model_default(name, spec) if getattr(s, name) is None else getattr(s, name)
        for name in carried_fields()
    }
    for name, v in value.items():
        check_value(name, v)  # a model folder's own defaults obey the same rules
    floats = {name: float(value[name]) for name in ("cfg", "shift", "cfg_trunc", "renorm_cfg")}
    req = Request(
        prompts=prompts,
        seeds=[base_seed + i for i in range(len(prompts))],
        warnings=warns,
        **{**value, **floats, "steps": int(value["steps"]), "width": width, "height": height},
    )
    req.loras, req.fuse_loras = (adapters(s.loras) if adapters and s.loras else []), bool(s.fuse_loras)
    req.warnings += [note for a in req.loras for note in a.adapter.notes]
    return img2img.attach(req, image, s.hires, spec.max_side)


def parse_size(text, name: str = "size") -> tuple[int | None, int | None]:
    """'WIDTHxHEIGHT' (anything after a space ignored, as in the UI's '1344x768  (7:4)' labels) -> (w, h);
    'auto' or None -> (None, None), the model's default. The one size parser of every door."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None, None
    try:
        w, h = str(text).split()[0].lower().split("x")
        return int(w), int(h)
    except (ValueError, IndexError):
        raise SettingError(
            name, f"{name} must look like WIDTHxHEIGHT (e.g. 1024x1024) or 'auto', got '{str(text)[:40]}'"
        ) from None
