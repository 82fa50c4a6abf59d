"""load(): a model folder (or the embedded demo model) -> a ready Pipeline, and warm_up(), which pays a
process's one-time first-request costs up front. The run itself is newbie.pipeline.pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from newbie.config import SPECS
from newbie.device import DTYPES, parse_dtype, resolve_device, synchronize
from newbie.errors import NewbieError
from newbie.loading.components import load_components
from newbie.loading.folder import ModelFolder, locate, require
from newbie.loading.hashing import BackgroundHashes
from newbie.model.text import TextEncoders
from newbie.model.vae import LatentCodec
from newbie.pipeline.model_spec import model_spec
from newbie.pipeline.pipeline import Pipeline


def load(
    path: str | Path | None = None,
    *,
    device: str | None = None,
    dtype: str = "auto",
    text_dtype: str | None = None,
    vae_dtype: str = "fp32",
    text_encoder=None,
    clip_model=None,
    vae=None,
    spec: str = "newbie-exp0.1",
    vram: str | float | None = None,
    plan_size: tuple[int, int] | None = None,
    quantize: str | None = None,
    comfy_dir: str | Path | None = None,
    warm: bool = False,
) -> Pipeline:
    """Load a NewBie model folder (or the embedded demo model when path is None).

    path / text_encoder / clip_model / vae: folders or single files (ComfyUI's files included);
    comfy_dir: a ComfyUI models/ folder that supplies every component not given (docs/comfyui.md).

    vram: a GPU memory budget ("8GB", 8, or "auto" for the free memory) -> the planner picks residency,
    streaming, quantization and tiling for `plan_size` (default: the model's default size).
    quantize: "int8" / "fp8" weight-only (DiT and Gemma blocks, torchao) or "fp8-dynamic" compute (DiT,
    newbie.precision.fp8).
    device: "cpu", "cuda" or "cuda:N" (default: cuda when available). dtype: the DiT's, "auto" = bf16 on a GPU,
    fp32 on the CPU; text_dtype defaults to dtype; vae_dtype defaults to fp32. spec: the model family's
    defaults (newbie/config.py). Returns a Pipeline; a missing, damaged or mismatched file raises a one-line
    NewbieError (CheckpointError) naming it. warm: pay the first request's one-time costs now (warm_up).
    """
    from newbie.demo.model import resolve_model

    path, notice = resolve_model(path, comfy_dir)  # None or "demo": the embedded demo model
    dev = resolve_device(device)
    names = _dtype_names(dev, dtype, text_dtype, vae_dtype)
    folder = locate(path, text_encoder, clip_model, vae, comfy_dir=comfy_dir)
    notice = "; ".join(filter(None, [notice, *folder.notes]))  # which files a ComfyUI folder gave
    pipe = _build(folder, SPECS[spec], dev, names, notice, vram)
    if quantize:
        _quantize(pipe, quantize)
    if vram is not None:
        _apply_budget(pipe, vram, plan_size, quantize)
    if warm:
        warm_up(pipe)
    return pipe


def _dtype_names(dev: torch.device, dtype: str, text_dtype: str | None, vae_dtype: str) -> dict[str, str]:
    """Each component's dtype name ("bf16", ...): the text encoders follow the DiT unless given their own."""
    dit_dtype = parse_dtype(dtype, dev)
    return {
        "dit": dit_dtype,
        "text": parse_dtype(text_dtype or dit_dtype, dev),
        "vae": parse_dtype(vae_dtype, dev),
    }


def _build(
    folder: ModelFolder, base, dev: torch.device, names: dict[str, str], notice: str, vram
) -> Pipeline:
    """The four components read (in parallel threads, newbie.loading.components), the model's spec, and the
    Pipeline over them; the components' hashes start in background threads."""
    hint = "give --text-encoder/--clip-model/--vae or a full model folder"
    te = require(folder.text_encoder, "Gemma3 text encoder (text_encoder/)", hint)
    cm = require(folder.clip_model, "Jina CLIP model (clip_model/)", hint)
    va = require(folder.vae, "VAE (vae/)", hint)
    # with a budget, weights are read into CPU memory first and the plan decides what goes to the GPU
    load_dev = torch.device("cpu") if vram is not None and dev.type == "cuda" else dev
    dtypes = {k: DTYPES[v] for k, v in names.items()}
    c = load_components(folder, (te, cm, va), base.dit, dtypes, load_dev)
    mspec, spec_note = model_spec(folder, base, c.dit.cfg)  # without a spec: defaults from the shapes
    notice = "; ".join(filter(None, [notice, spec_note]))
    text = TextEncoders(c.gemma, c.gemma_tokenizer, c.jina, c.jina_tokenizer, mspec.text)
    pipe = Pipeline(mspec, folder, c.dit, text, LatentCodec(c.vae, c.vae_cfg), dev, names, notice)
    pipe.load_timings = c.timings  # where a load's time went (newbie bench startup)
    pipe.hashes = BackgroundHashes(folder)  # while the first picture is made (it waits for them at the end)
    return pipe


def _quantize(pipe: Pipeline, quantize: str) -> None:
    from newbie.memory.quant import quantize_dit, quantize_gemma

    quantize_dit(pipe.dit, quantize)
    if quantize != "fp8-dynamic":
        quantize_gemma(pipe.text.gemma, quantize)
    pipe.dtypes["quant"] = quantize


def _apply_budget(pipe: Pipeline, vram, plan_size: tuple[int, int] | None, quantize: str | None) -> None:
    """The memory plan a GPU budget allows for one image at `plan_size` (the model's default size)."""
    from newbie.memory.planner import free_vram_gib, parse_vram, plan_for

    if vram == "auto":
        budget = free_vram_gib()
        if budget is None:
            raise NewbieError("--vram auto needs a CUDA GPU")
    else:
        budget = parse_vram(vram)
    w, h = plan_size or (pipe.spec.sampling.width, pipe.spec.sampling.height)
    plan = plan_for(budget, w, h, pipe.component_sizes)
    if quantize and plan.quantize:
        raise NewbieError("--quantize and a plan that quantizes cannot be combined; drop one")
    pipe.apply_plan(plan)


def warm_up(pipe: Pipeline) -> float:
    """The first text encode and the first DiT step of a process pay one-time costs (CUDA library handles,
    kernel selection, lazy allocations). A server pays them here instead of in its first request: the model's
    default negative prompt goes into the embedding cache (requests with CFG need it anyway) and one tiny
    image runs every stage once. Results of later requests are unchanged. Returns the seconds spent."""
    t0 = time.perf_counter()
    pipe.embed([pipe.spec.sampling.negative], [])
    side = 8 * pipe.codec.cfg.downscale  # a tiny image: 64 px with FLUX's VAE (an 8x8 latent)
    pipe.generate("warm-up", seed=0, steps=1, width=side, height=side, sampler="euler", cfg_trunc=1.0)
    if pipe.device.type == "cuda":
        # kernels are chosen per shape (cuDNN attention plans, GEMM heuristics): one step at the default size
        # too, or the first real step ran 1.8x a later one after the tiny image alone (H100, 2026-12-07)
        d = pipe.spec.sampling
        pipe.generate(
            "warm-up", seed=0, steps=1, width=d.width, height=d.height, sampler="euler", cfg_trunc=1.0
        )
    synchronize(pipe.device)
    return time.perf_counter() - t0
