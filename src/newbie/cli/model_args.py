"""The model and prompt arguments shared by `generate`, `trace`, `bench` and `serve`."""

from __future__ import annotations

import argparse
from pathlib import Path

from newbie.errors import NewbieError


def names_file(text: str) -> bool:
    """A bare FILE prompt: one line, no markup, naming an existing file (the rule of `generate` and `prompt`)."""
    if "\n" in text or "<" in text:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # longer than a file name can be, or a NUL byte: prompt text
        return False


def read_prompt(text: str) -> str:
    """PROMPT, @FILE, or FILE (names_file) -> the prompt text."""
    if text.startswith("@") or names_file(text):
        path = Path(text.removeprefix("@"))
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise NewbieError(
                f"{path}: cannot read prompt file ({e.strerror if isinstance(e, OSError) else e})"
            ) from None
    return text


def parse_size(text: str) -> tuple[int, int] | None:
    """The argparse type of --size for trace and bench: the request's own parse_size, its error as argparse's."""
    from newbie.pipeline.request import SettingError
    from newbie.pipeline.request import parse_size as parse

    try:
        w, h = parse(text)
    except SettingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return None if w is None else (w, h)


def step_cache_setting(text: str):
    """The argparse type of --step-cache: a threshold or `auto` (newbie.model.step_cache.parse_step_cache)."""
    from newbie.model.step_cache import parse_step_cache

    try:
        return parse_step_cache(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="model folder, transformer .safetensors (e.g. ComfyUI's "
        "NewBie-Image-Exp0.1-bf16.safetensors) or a ComfyUI models/ folder "
        "(default: the embedded demo model)",
    )
    p.add_argument("--text-encoder", help="Gemma3 folder or ComfyUI file (gemma_3_4b_it_bf16.safetensors)")
    p.add_argument("--clip-model", help="Jina CLIP v2 folder or ComfyUI file (jina_clip_v2_bf16.safetensors)")
    p.add_argument("--vae", help="VAE folder or single file (FLUX ae.safetensors)")
    p.add_argument(
        "--comfy-dir",
        help="a ComfyUI models/ folder: the components not given are found in its "
        "diffusion_models/, text_encoders/ (or clip/) and vae/ by their usual names",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--dtype", default="auto", help="DiT dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32"
    )
    p.add_argument("--text-dtype", help="text-encoder dtype (default: as --dtype)")
    p.add_argument("--vae-dtype", default="fp32", help="VAE decode dtype")
    p.add_argument("--vram", help="fit a GPU memory budget, e.g. 8GB, or 'auto' (see `newbie plan`)")
    p.add_argument(
        "--quantize",
        choices=("int8", "fp8", "fp8-dynamic"),
        help="quantized DiT/Gemma: int8/fp8 weights (torchao), fp8-dynamic compute (native)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the repeated block (GPU; first run slower)"
    )
    p.add_argument(
        "--step-cache",
        type=step_cache_setting,
        default=0.0,
        help="skip deep layers on steps that barely change: a first-block threshold, e.g. 0.05, or 'auto' "
        "(the policy measured best; faster, not exact; 0 = off)",
    )


def load_kwargs(args) -> dict:
    """`newbie.load()`'s model arguments from the shared flags (add_model_args), the model as `path`: what each
    process of --parallel loads; load_from_args adds the device and the memory budget."""
    return dict(
        path=getattr(args, "model", None),
        dtype=getattr(args, "dtype", "auto"),
        text_dtype=getattr(args, "text_dtype", None),
        vae_dtype=getattr(args, "vae_dtype", "fp32"),
        text_encoder=getattr(args, "text_encoder", None),
        clip_model=getattr(args, "clip_model", None),
        vae=getattr(args, "vae", None),
        comfy_dir=getattr(args, "comfy_dir", None),
        quantize=getattr(args, "quantize", None),
    )


def load_from_args(args, **overrides):
    """`newbie.load()` from the shared model arguments (add_model_args); `overrides` win over the flags
    (e.g. a recipe's dtypes, another device, the plan's size). Sets the step cache from --step-cache."""
    from newbie import load

    kwargs = {
        **load_kwargs(args),
        "device": getattr(args, "device", None),
        "vram": getattr(args, "vram", None),
    }
    pipe = load(**{**kwargs, **overrides})
    if getattr(args, "step_cache", 0.0):
        pipe.step_cache = args.step_cache
    return pipe


def spec_from_args(args):
    """The model's spec (sizes, sampling defaults) from the model flags, reading no weights and checking no
    file: what a request is checked against before the model loads (which then reports a missing file).
    A model folder's own spec (config.SPEC_FILE) or a single file's <name>.newbie_spec.json is read; without
    one, and for ComfyUI folders, the family's (the load may then take a demo-width model's defaults from its
    shapes, whose limits are narrower and are checked once it has loaded)."""
    from newbie.config import SPECS, folder_spec, read_spec
    from newbie.demo.model import resolve_model
    from newbie.loading.comfy import is_comfy_dir
    from newbie.pipeline.model_spec import sidecar_path

    base = SPECS["newbie-exp0.1"]
    if getattr(args, "comfy_dir", None) is not None:
        return base
    path = Path(resolve_model(getattr(args, "model", None))[0]).expanduser()
    if path.is_file():
        sidecar = sidecar_path(path)
        return read_spec(sidecar, base) if sidecar.is_file() else base
    return folder_spec(path, base) if path.is_dir() and not is_comfy_dir(path) else base
