"""The page's settings as plain values: defaults from the model spec, a recipe back into the form
(`Use these settings`), and the form into the request's `Settings` (pipeline/request.py), whose rules also
give the number widgets their bounds. Keys are the widget keys."""

from __future__ import annotations

from collections.abc import Mapping

from newbie.config import ModelSpec
from newbie.errors import NewbieError
from newbie.pipeline.recipe import Recipe
from newbie.pipeline.request import SettingError, Settings, carried_fields, check, check_value, parse_size
from newbie.ui.compose import MODES
from newbie.ui.sizes import size_label
from newbie.ui.styles import NO_STYLE, preset_tags
from newbie.ui.workflows import workflow_defaults, workflow_kwargs, workflows_from_recipe

DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
DEFAULT_STYLE = NO_STYLE  # the prompt as written: the same picture as the CLI and the API make from it
# request fields with a widget of their own; the recipe's other sampling fields ride in `advanced`
WIDGETS = ("negative", "steps", "cfg", "sampler", "width", "height")


def defaults(spec: ModelSpec) -> dict[str, object]:
    d = spec.sampling
    return {
        "mode": MODES[0],
        "prompt": "",
        "describe": "",
        "negative": d.negative,
        "style_preset": DEFAULT_STYLE,
        "style_tags": preset_tags(DEFAULT_STYLE),
        "size": size_label(d.width, d.height),
        "steps": d.steps,
        "cfg": float(d.cfg),
        "sampler": d.sampler,
        "seed": "",
        "dtype": "auto",
        **workflow_defaults(),
    }


def from_recipe(recipe: Recipe) -> dict[str, object]:
    """Widget values that make the same image again: the recipe's prompt already holds its style tags, so
    the style preset is switched off; the rest (shift, CFG truncation, renorm) rides in `advanced`."""
    return {
        "mode": MODES[0],
        "prompt": recipe.prompt,
        "negative": recipe.negative,
        "style_preset": NO_STYLE,
        "style_tags": "",
        "size": size_label(recipe.width, recipe.height),
        "steps": recipe.steps,
        "cfg": float(recipe.cfg),
        "sampler": recipe.sampler,
        "seed": str(recipe.seed),
        "dtype": recipe.dtype,
        "advanced": {  # ComfyUI-style recipes stay so
            name: getattr(recipe, name) for name in carried_fields() if name not in WIDGETS
        },
        **workflows_from_recipe(recipe),
    }


def bounds(name: str) -> dict:
    """A number widget's min/max: the request field's own bounds (pipeline/request.py)."""
    rule = Settings.rule(name)
    kind = float if rule.kind == "float" else int
    return {"min_value": kind(rule.lo), "max_value": kind(rule.hi), "help": rule.help}


def parse_seed(text: str) -> int | None:
    text = str(text).strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise SettingError(
            "seed", f"seed must be a whole number (or empty for a random one), got '{text}'"
        ) from None
    check_value("seed", seed)
    return seed


def dtype(values: Mapping) -> str:
    name = values["dtype"]
    if name not in DTYPE_CHOICES:
        raise NewbieError(f"unknown precision '{name}' (choose from {', '.join(DTYPE_CHOICES)})")
    return name


def settings(values: Mapping, prompt: str = "") -> Settings:
    """The widget values -> the request's Settings (the page puts in the prompt with its style applied).
    Every value is checked by its field's rule here, so a bad one is a one-line NewbieError before anything
    runs; `advanced` holds the recipe's other sampling fields (shift, cfg_trunc, ...), under their names."""
    width, height = parse_size(values["size"])
    dtype(values)
    out = Settings(
        prompt=prompt,
        negative=values["negative"],
        width=width,
        height=height,
        steps=values["steps"],
        cfg=values["cfg"],
        sampler=values["sampler"],
        seed=parse_seed(values["seed"]),
        **dict(values.get("advanced") or {}),
        **workflow_kwargs(values),
    )
    check(out)
    return out


def generate_kwargs(settings: Settings) -> dict:
    """Settings as `Pipeline.generate(prompt, negative, **kwargs)` keywords (what ui.job.Job runs): the
    fields set to something other than their default, so an untouched expander is plain text-to-image."""
    defaults = Settings.__dataclass_fields__
    return {
        k: v
        for k, v in vars(settings).items()
        if k not in ("prompt", "negative") and v is not defaults[k].default and v != defaults[k].default
    }
