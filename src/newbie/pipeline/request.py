"""The one request schema: what a user asks for (`Settings`) and what the engine runs (`Request`).

Every front end builds a `Settings`: the CLI from its flags, the UI from its form, the HTTP API from its body,
`--from` from a PNG's recipe (`Settings.from_recipe`). `Pipeline.request` fills the model's defaults and
validates it into a `Request`. A `Recipe` (pipeline/recipe.py) is one image of a `Request` plus provenance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from newbie.pipeline.img2img import HiresSpec, ImageInput
    from newbie.pipeline.recipe import Recipe


@dataclass(kw_only=True)
class Settings:
    """Everything one generate call can ask for. None means "the model's default" (newbie/config.py).

    prompt: text or XML, or a list of prompts (one image each, times `batch`).
    seed: the first image's seed; image i of the batch uses seed + i.
    steps / sampler / shift / cfg / cfg_trunc / renorm_cfg: the sampling recipe (docs: README, Options).
    width / height: multiples of 16; with an init image and no size, the image's own size.
    loras: adapter paths, (path, strength) pairs or dicts (docs/workflows.md); fuse_loras adds them into
    the weights. init_image / strength / mask / mask_feather: img2img and inpainting. hires: True, a scale,
    'WxH' or a dict (scale or width/height, upscaler, strength, steps).
    noise: "newbie" (one CPU generator per image, seeded seed + i) or "comfy" (ComfyUI's: the whole batch from
    one CPU generator seeded `seed`). schedule: "uniform" (flow_sigmas) or "simple" (ComfyUI's scheduler).
    """

    prompt: str | list[str]
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    shift: float | None = None
    width: int | None = None
    height: int | None = None
    batch: int = 1
    cfg_trunc: float | None = None
    renorm_cfg: float | None = None
    loras: list | None = None
    fuse_loras: bool = False
    init_image: object = None
    strength: float | None = None
    mask: object = None
    mask_feather: int | None = None
    hires: object = None
    noise: str | None = None
    schedule: str | None = None

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, loras=None, init_image=None, mask=None) -> Settings:
        """The settings that re-make a recipe: its whole batch (so every kernel sees the same shapes), with
        the first seed of that batch. loras/init_image/mask: the recipe's input files where they moved
        (checked against the recorded hashes)."""
        from newbie.adapters import recipe as adapter_recipe
        from newbie.pipeline import img2img

        return cls(
            prompt=recipe.prompt,
            negative=recipe.negative,
            seed=recipe.seed - recipe.batch_index,
            steps=recipe.steps,
            cfg=recipe.cfg,
            sampler=recipe.sampler,
            shift=recipe.shift,
            width=recipe.width,
            height=recipe.height,
            batch=recipe.batch_size,
            cfg_trunc=recipe.cfg_trunc,
            renorm_cfg=recipe.renorm_cfg,
            noise=recipe.noise,
            schedule=recipe.schedule,
            **adapter_recipe.remake_kwargs(recipe, loras),
            **img2img.remake_kwargs(recipe, init_image, mask),
        )

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass
class Request:
    """A validated request with every default filled: what `Pipeline.run` executes.

    prompts/seeds: one entry per image (a batch repeats the prompt with consecutive seeds). image: the
    img2img/inpainting input, fitted to width x height; hires: the second pass, or None.
    """

    prompts: list[str]
    negative: str
    seeds: list[int]
    steps: int
    cfg: float
    sampler: str
    shift: float
    width: int
    height: int
    cfg_trunc: float
    renorm_cfg: float
    warnings: list[str] = field(default_factory=list)
    loras: list = field(default_factory=list)  # newbie.adapters.ActiveLora
    fuse_loras: bool = False
    image: ImageInput | None = None
    hires: HiresSpec | None = None
    noise: str = "newbie"  # NOISES in pipeline.py
    schedule: str = "uniform"  # newbie.sampling.schedules.SCHEDULES
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
