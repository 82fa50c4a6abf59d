"""The diffusers argument names and values of `newbie.diffusers_api.NewbiePipeline`, mapped onto ours: which
request setting each argument gives, the checks that name the diffusers argument in their errors, and the
conversions (generators to seeds, the PR's embedding trio to a TextEmbeds, system prompt and sequence length
to a TextConfig). The module docstring of diffusers_api gives each argument's meaning."""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np
import torch

from newbie.errors import NewbieError
from newbie.pipeline.recipe import PNG_KEY

_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
# Each request setting (newbie.pipeline.request.Settings) -> the call's argument that gives it. The diffusers
# names keep their own meaning where the module docstring says so (guidance_scale <= 1 is cfg 1,
# cfg_trunc_ratio is a step fraction, generator carries the seed); every other setting is taken under its
# own name as an extra keyword (sampler, shift, noise, schedule, loras, init_image, ...). A test checks
# this covers every field, and a bad value is refused by the field's rule under the diffusers name.
DIFFUSERS_NAMES = {
    "prompt": "prompt",
    "negative": "negative_prompt",
    "seed": "generator",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "cfg_trunc": "cfg_trunc_ratio",
    "renorm_cfg": "cfg_normalization",
    "batch": "num_images_per_prompt",
    "width": "width",
    "height": "height",
}
_OUTPUT_TYPES = ("pil", "np", "pt", "latent")
_CALLBACK_TENSORS = ("latents",)
# arguments of the PR that this engine does not take, with what to do instead
_NOT_HERE = {
    "sigmas": "custom sigma grids are not supported; use num_inference_steps and shift",
    "attention_kwargs": "not supported: our attention has no processors to pass arguments to",
    "text_encoder_2": "not needed: Jina CLIP is read from the folder; give clip_model='path' for another one",
    "scheduler": "not needed: give sampler='euler' | 'midpoint' | 'dpmpp_2m' and shift= to the call",
}


def _reject(unknown: dict, known, where: str) -> None:
    """One NewbieError for the first unknown keyword, naming the nearest known one."""
    for name in unknown:
        if name in _NOT_HERE:
            raise NewbieError(f"{where}: '{name}' {_NOT_HERE[name]}")
        near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(known)})"
        raise NewbieError(f"{where}: unknown argument '{name}'{hint}")


def _checked(name: str, value):
    """A Settings field's rule applied to the diffusers argument that gives it, the error naming both."""
    from newbie.pipeline.request import SettingError, check_value

    try:
        check_value(name, value)
    except SettingError as e:
        raise SettingError(name, f"{DIFFUSERS_NAMES[name]}: {e}") from None
    return value


def _dtype_name(dtype) -> str:
    if dtype is None or dtype == "auto":
        return "auto"
    if dtype not in _DTYPES:
        raise NewbieError(
            f"torch_dtype must be torch.bfloat16, torch.float16, torch.float32 or 'auto', got {dtype}"
        )
    return _DTYPES[dtype]


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NewbieError(f"unknown device '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NewbieError(f"device '{device}' was asked for but no CUDA GPU is available")
    return dev


def _seed(generator) -> int:
    if not isinstance(generator, torch.Generator):
        raise NewbieError(
            f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}"
        )
    return generator.initial_seed() % 2**63


def check_call(output_type, tensor_inputs, prompt, prompt_embeds, negative_prompt, negative_embeds) -> list:
    """The call's output and callback options, and that each text comes as a prompt or as embeddings;
    -> the callback's tensor names."""
    if output_type not in _OUTPUT_TYPES:
        raise NewbieError(f"output_type must be one of {', '.join(_OUTPUT_TYPES)}, got {output_type!r}")
    wanted = list(tensor_inputs or ())
    if any(k not in _CALLBACK_TENSORS for k in wanted):
        raise NewbieError(
            f"callback_on_step_end_tensor_inputs: only {list(_CALLBACK_TENSORS)} can be passed, got {wanted}"
        )
    if prompt is not None and prompt_embeds is not None:
        raise NewbieError("give prompt or prompt_embeds, not both")
    if negative_prompt is not None and negative_embeds is not None:
        raise NewbieError("give negative_prompt or negative_prompt_embeds, not both")
    if prompt is None and prompt_embeds is None:
        raise NewbieError("give a prompt (or prompt_embeds)")
    return wanted


def prompts_of(prompt, per_prompt: int) -> list[str]:
    """One prompt per image: each given prompt num_images_per_prompt times."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise NewbieError("prompt must be a string or a non-empty list of strings")
    _checked("batch", per_prompt)
    return [p for p in prompts for _ in range(per_prompt)]


def negative_of(negative, default: str) -> str:
    """The one negative prompt of a call (None: the model's own)."""
    if negative is None:
        return default
    if isinstance(negative, (list, tuple)):
        if len(set(negative)) != 1 or not all(isinstance(n, str) for n in negative):
            raise NewbieError(
                "one negative prompt for all images: give a string (or a list of equal strings)"
            )
        return negative[0]
    if not isinstance(negative, str):
        raise NewbieError("negative_prompt must be a string")
    return negative


def texts_of(prompt, prompt_embeds, negative_prompt, negative_embeds, per_prompt: int, default_negative: str):
    """-> (one prompt per image, the negative prompt); given embeddings stand in as a placeholder text."""
    if prompt is None:
        rows = prompt_embeds.cap_feats.shape[0] if hasattr(prompt_embeds, "cap_feats") else len(prompt_embeds)
        prompts = prompts_of(["(given prompt_embeds)"] * rows, per_prompt)
    else:
        prompts = prompts_of(prompt, per_prompt)
    negative = (
        "(given negative_prompt_embeds)"
        if negative_embeds is not None
        else negative_of(negative_prompt, default_negative)
    )
    return prompts, negative


def settings_of(
    prompts: list[str],
    negative: str,
    generator,
    latents,
    downscale: int,
    call: dict,
):
    """-> (Settings of the call, the per-image seeds of a list of generators or None). call: the pipeline
    call's arguments by name (its **kwargs under "kwargs": our other request settings by their own names)."""
    from newbie.pipeline.request import Settings

    height, width = call["height"], call["width"]
    num_inference_steps, guidance_scale = call["num_inference_steps"], call["guidance_scale"]
    cfg_normalization, cfg_trunc_ratio = call["cfg_normalization"], call["cfg_trunc_ratio"]

    n = len(prompts)
    seeds = None
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise NewbieError(f"{len(generator)} generators for {n} images: give one per image")
        seeds = [_seed(g) for g in generator]
    if latents is not None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise NewbieError("latents must be a (batch, channels, height/8, width/8) tensor")
        height = latents.shape[-2] * downscale if height is None else height
        width = latents.shape[-1] * downscale if width is None else width
    _checked("steps", num_inference_steps)
    cfg = _checked("cfg", guidance_scale)
    cfg = None if cfg is None else (1.0 if cfg <= 1 else float(cfg))
    if cfg_normalization is None or isinstance(cfg_normalization, bool):
        renorm = None if cfg_normalization is None else (1.0 if cfg_normalization else 0.0)
    else:
        renorm = float(_checked("renorm_cfg", cfg_normalization))
    if cfg_trunc_ratio is not None:
        _checked("cfg_trunc", cfg_trunc_ratio)
    settings = Settings(
        prompt=prompts,
        negative=negative,
        batch=1,
        width=width,
        height=height,
        steps=num_inference_steps,
        cfg=cfg,
        renorm_cfg=renorm,
        sampler=call["sampler"],
        shift=call["shift"],
        seed=seeds[0] if seeds else (None if generator is None else _seed(generator)),
        **call["kwargs"],
    )
    return settings, seeds


def text_cfg_of(base, system_prompt, max_sequence_length):
    """The TextConfig a call asks for, or None when it is the model's own `base` (the engine's cached path)."""
    if (
        not isinstance(max_sequence_length, int)
        or max_sequence_length < 1
        or max_sequence_length % base.pad_multiple
    ):
        raise NewbieError(
            f"max_sequence_length must be a positive multiple of {base.pad_multiple} (captions are "
            f"padded to one), got {max_sequence_length!r}"
        )
    if system_prompt is None and max_sequence_length == base.max_tokens:
        return None
    cfg = dataclasses.replace(base, max_tokens=max_sequence_length)
    if system_prompt is not None:
        if not isinstance(system_prompt, str):
            raise NewbieError("system_prompt must be a string")
        text = system_prompt + " <Prompt Start> "
        cfg = dataclasses.replace(cfg, system_prompt_xml=text, system_prompt_text=text)
    return cfg


def given_embeds(embeds, pooled, mask, name: str, count: int, per_prompt: int, cfg):
    """The PR's (embeds, pooled, mask) trio or a TextEmbeds -> TextEmbeds with one row per image; cfg: the
    DiT's config (caption and pooled feature widths)."""
    from newbie.model.text import TextEmbeds

    if isinstance(embeds, TextEmbeds):
        if pooled is not None or mask is not None:
            raise NewbieError(f"{name} is a TextEmbeds: it already holds the pooled features and the mask")
        e = embeds
    else:
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[-1] != cfg.cap_feat_dim:
            raise NewbieError(f"{name} must be a (batch, tokens, {cfg.cap_feat_dim}) tensor or a TextEmbeds")
        b, n = embeds.shape[:2]
        pooled_name = name.replace("prompt_embeds", "pooled_prompt_embeds")
        if not isinstance(pooled, torch.Tensor) or tuple(pooled.shape) != (b, cfg.clip_text_dim):
            raise NewbieError(
                f"{name} needs {pooled_name}, a ({b}, {cfg.clip_text_dim}) tensor (Jina's pooled "
                "feature; encode_prompt returns it)"
            )
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool)
        elif tuple(mask.shape) != (b, n):
            raise NewbieError(f"{name.replace('embeds', 'attention_mask')} must have shape ({b}, {n})")
        e = TextEmbeds(embeds, mask.to(embeds.device).bool(), pooled.to(embeds.device))
    if e.cap_feats.shape[0] * per_prompt != count:
        raise NewbieError(f"{name} has {e.cap_feats.shape[0]} rows; expected {count // per_prompt}")
    if per_prompt > 1:
        rep = lambda t: t.repeat_interleave(per_prompt, dim=0)  # noqa: E731
        e = TextEmbeds(rep(e.cap_feats), rep(e.cap_mask), rep(e.pooled))
    return e


def output_of(gen, output_type: str):
    """The images as output_type asks: PIL (with their recipes in the PNG text), float arrays or latents."""
    if output_type == "pil":
        for image, recipe in zip(gen.images, gen.recipes):  # what save_png writes: the PNG's text chunks
            image.info.update({PNG_KEY: recipe.to_json(), "parameters": recipe.summary()})
        return gen.images
    if output_type == "latent":
        return gen.latents
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in gen.images])
    return arrays if output_type == "np" else torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
