"""The page's settings as plain values: defaults from the model spec, a recipe back into the form
(`Use these settings`), and the form into `Pipeline.generate()` arguments. Keys are the widget keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from newbie.config import ModelSpec
from newbie.errors import NewbieError
from newbie.pipeline.recipe import Recipe
from newbie.ui.compose import MODES
from newbie.ui.sizes import parse_size, size_label
from newbie.ui.styles import NO_STYLE, preset_tags
from newbie.ui.workflows import workflow_defaults, workflow_kwargs, workflows_from_recipe

DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
DEFAULT_STYLE = NO_STYLE  # the prompt as written: the same picture as the CLI and the API make from it


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
        "advanced": {
            "shift": recipe.shift,
            "cfg_trunc": recipe.cfg_trunc,
            "renorm_cfg": recipe.renorm_cfg,
            "noise": recipe.noise,
            "schedule": recipe.schedule,
        },  # ComfyUI-style recipes stay so
        **workflows_from_recipe(recipe),
    }


@dataclass
class Settings:
    """Everything generate() needs besides the prompt."""

    negative: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seed: int | None  # None: the pipeline draws one
    dtype: str
    advanced: dict  # shift, cfg_trunc, renorm_cfg from a recipe; empty = the model's defaults
    workflows: dict = field(default_factory=dict)  # loras, init_image, mask, hires ... (see workflows.py)

    def kwargs(self) -> dict:
        return dict(
            seed=self.seed,
            steps=self.steps,
            cfg=self.cfg,
            sampler=self.sampler,
            width=self.width,
            height=self.height,
            **self.advanced,
            **self.workflows,
        )


def parse_seed(text: str) -> int | None:
    text = str(text).strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        raise NewbieError(f"seed must be a whole number (or empty for a random one), got '{text}'") from None
    if not 0 <= seed < 2**63:
        raise NewbieError(f"seed must be between 0 and 2^63-1, got {seed}")
    return seed


def settings(values: Mapping) -> Settings:
    """The widget values -> Settings; a bad value is a one-line NewbieError."""
    try:
        width, height = parse_size(str(values["size"]))
    except ValueError:
        raise NewbieError(f"size must look like WIDTHxHEIGHT, got '{values['size']}'") from None
    dtype = values["dtype"]
    if dtype not in DTYPE_CHOICES:
        raise NewbieError(f"unknown precision '{dtype}' (choose from {', '.join(DTYPE_CHOICES)})")
    return Settings(
        negative=values["negative"],
        width=width,
        height=height,
        steps=int(values["steps"]),
        cfg=float(values["cfg"]),
        sampler=values["sampler"],
        seed=parse_seed(values["seed"]),
        dtype=dtype,
        advanced=dict(values.get("advanced") or {}),
        workflows=workflow_kwargs(values),
    )
