"""Architecture and sampling specs. Every default the CLI, UI and API show lives here."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from newbie.errors import NewbieError

# The names a request may choose from. Plain tuples here, so that building the CLI, the API schema or the UI
# form imports no torch; tests assert they match the engine's tables (sampling.samplers, sampling.schedules).
SAMPLER_NAMES = ("euler", "midpoint", "dpmpp_2m", "res_multistep")
SCHEDULE_NAMES = ("uniform", "simple")  # flow_sigmas, ComfyUI's "simple" scheduler
NOISE_NAMES = ("newbie", "comfy")  # per-image generators, or ComfyUI's one draw for the batch
SPEC_FILE = (
    "newbie_spec.json"  # optional, our own: sampling defaults of a model folder (the demo model has one)
)


@dataclass(frozen=True)
class DiTConfig:
    """NextDiT_CLIP hyper-parameters (spec §2.1). Field names follow the official constructor."""

    dim: int = 2304
    n_layers: int = 36
    n_refiner_layers: int = 2  # noise_refiner and context_refiner each
    n_heads: int = 24
    n_kv_heads: int = 8  # GQA: q head h reads kv head h // (n_heads // n_kv_heads)
    patch_size: int = 2
    in_channels: int = 16
    cap_feat_dim: int = 2560  # Gemma3-4B hidden size
    clip_text_dim: int = 1024  # Jina CLIP v2 pooled width
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5  # block norms and cap_embedder.0
    qk_norm_eps: float = (
        1e-5  # q/k norm and clip_text_pooled_proj.0: 1e-5 (apex) vs 1e-6 (vanilla), spec §2.2
    )
    axes_dims: tuple[int, int, int] = (32, 32, 32)
    axes_lens: tuple[int, int, int] = (1024, 512, 512)
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if sum(self.axes_dims) != self.head_dim:
            raise ValueError(f"axes_dims {self.axes_dims} must sum to head_dim {self.head_dim}")
        if any(d % 2 for d in self.axes_dims):
            raise ValueError(f"axes_dims {self.axes_dims} must be even (RoPE rotates pairs)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def adaln_dim(self) -> int:
        # Width of the time/conditioning vector: min(dim, 1024) in the official code.
        return min(self.dim, 1024)

    @property
    def ffn_hidden(self) -> int:
        hidden = 4 * self.dim
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.in_channels

    def replace(self, **changes) -> DiTConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class VAEConfig:
    latent_channels: int = 16
    scaling_factor: float = 0.3611
    shift_factor: float = 0.1159
    downscale: int = 8


@dataclass(frozen=True)
class TextConfig:
    max_tokens: int = 512  # Gemma truncation limit used in training
    pad_multiple: int = 8
    hidden_layer: int = -2  # Gemma hidden_states index fed to the DiT (input of the last layer)
    clip_max_tokens: int = 2048  # official Jina truncation
    system_prompt_xml: str = (
        "You are an assistant designed to generate high-quality anime images based on xml format prompts. "
        "<Prompt Start> "
    )
    system_prompt_text: str = (
        "You are an assistant designed to generate high-quality anime images with the highest degree of "
        "image-text alignment based on textual prompts. <Prompt Start> "
    )


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int = 18
    cfg: float = 5.0
    sampler: str = "midpoint"
    shift: float = 6.0
    cfg_trunc: float = 0.25  # CFG only while t < cfg_trunc (t: 0 = noise, 1 = data), official demo
    renorm_cfg: float = 0.0  # 0 = off, as in the official demo
    width: int = 1024
    height: int = 1024
    negative: str = ""
    noise: str = "newbie"
    schedule: str = "uniform"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dit: DiTConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    trained_pixels: int = 1024 * 1024  # W*H above this is outside the trained area
    max_aspect: float = 4.0
    max_side: int = 2048


SPECS: dict[str, ModelSpec] = {
    "newbie-exp0.1": ModelSpec(name="newbie-exp0.1", dit=DiTConfig()),
}


def folder_spec(root: Path | None, base: ModelSpec) -> ModelSpec:
    """`base` with the overrides of the folder's SPEC_FILE, if it has one. Reads no weights, so a request can
    be checked against the model's limits before anything loads."""
    spec_path = Path(root) / SPEC_FILE if root else None
    if not spec_path or not spec_path.is_file():
        return base
    return read_spec(spec_path, base)


def read_spec(path: Path, base: ModelSpec) -> ModelSpec:
    """`base` with the overrides of a SPEC_FILE (its sampling defaults, name, trained area, largest side)."""
    try:
        raw = json.loads(Path(path).read_text())
        sampling = dataclasses.replace(base.sampling, **raw.get("sampling", {}))
        top = {k: v for k, v in raw.items() if k in ("name", "trained_pixels", "max_aspect", "max_side")}
        return dataclasses.replace(base, sampling=sampling, **top)
    except (OSError, ValueError, TypeError) as e:
        raise NewbieError(f"{path}: unreadable model spec ({e})") from None
