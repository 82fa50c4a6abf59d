"""The full recipe of an image, stored in its PNG so `newbie generate --from` can re-make it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from newbie.errors import NewbieError
from newbie.pipeline.request import Sampled

PNG_KEY = "newbie"


@dataclass
class Recipe(Sampled):
    """One image of a Request (its Sampled values: negative, steps, cfg, sampler, shift, size, cfg_trunc,
    renorm_cfg, noise, schedule) with its prompt, seed and provenance."""

    prompt: str
    seed: int
    dtype: str  # DiT compute dtype
    text_dtype: str
    vae_dtype: str
    device: str
    model: str  # folder name of the model
    model_hash: str
    version: str
    batch_size: int = 1
    batch_index: int = 0
    warnings: list[str] = field(default_factory=list)
    # artist workflows (docs/workflows.md); the defaults are plain text-to-image, so old recipes still load
    loras: list[dict] = field(default_factory=list)  # {path, name, sha256, config_sha256, strength, kind}
    fuse_loras: bool = False
    init_image: str = ""  # img2img/inpainting input path ("" when it was an in-memory image)
    init_image_sha256: str = ""  # sha256 of its decoded RGB pixels
    strength: float | None = None
    mask: str = ""
    mask_sha256: str = ""
    mask_feather: int | None = None
    hires: dict | None = None  # {width, height, upscaler, strength, steps}; width/height = the first pass
    # sha256 of each component's weights (loading.hashing.component_hashes); {} in recipes older than it
    components: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            raw = json.loads(text)
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in names})
        except (ValueError, TypeError) as e:
            raise NewbieError(f"unreadable recipe ({e})") from None

    def summary(self) -> str:
        """A1111-style human-readable parameters line, for tools that show PNG 'parameters'."""
        return (
            f"{self.prompt}\nNegative prompt: {self.negative}\nSteps: {self.steps}, Sampler: {self.sampler}, "
            f"CFG scale: {self.cfg}, Seed: {self.seed}, Size: {self.width}x{self.height}, Shift: {self.shift}, "
            f"Model: {self.model}, Model hash: {self.model_hash[:10]}, dtype: {self.dtype}, newbie {self.version}"
        )


def png_chunks(path: Path) -> dict:
    """A PNG's text chunks (newbie's recipe, ComfyUI's graphs, A1111's parameters)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return dict(im.info)
    except FileNotFoundError:
        raise NewbieError(f"{path}: no such image") from None
    except (OSError, UnidentifiedImageError) as e:
        raise NewbieError(f"{path}: not a readable image ({e})") from None
