"""The precision study: the same prompts and seeds generated with the DiT in fp32 (the reference), bf16, fp16
and, where this build and device allow, int8/fp8 weights; per dtype the cost (time, memory) and the numerics
(PSNR/SSIM/largest pixel error against the fp32 image, NaN/Inf, black images, fp16-guard interventions).

One dtype is loaded at a time and freed before the next, so the peak of one never includes another's weights.
"""

from __future__ import annotations

import gc
import inspect
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import torch

from newbie.bench import memory, metrics
from newbie.errors import NewbieError

REFERENCE = "fp32"
FLOAT_DTYPES = ("fp32", "bf16", "fp16")
QUANTIZED = ("int8", "fp8", "fp8-dynamic")  # newbie.load(quantize=...), where that exists: int8/fp8 weights,
# fp8-dynamic = fp8 weights and activations (fp8 tensor cores; Hopper and later)
ALL_DTYPES = FLOAT_DTYPES + QUANTIZED
DEFAULT_DTYPES = ("fp32", "bf16", "fp16", "int8", "fp8")


@dataclass
class StudyConfig:
    dtypes: list[str] = field(default_factory=lambda: list(DEFAULT_DTYPES))
    prompts: list[str] | None = None  # None: newbie.bench.prompts.default_prompts for the model
    seeds: list[int] | None = None  # None: default_seeds for the model
    model: str | None = None  # None: the embedded demo model
    device: str | None = None
    text_dtype: str | None = (
        None  # None: the text encoders follow each dtype, as `newbie generate --dtype` does
    )
    steps: int | None = None  # None: bench.prompts.default_steps, else the model's own default
    sampler: str | None = None
    cfg: float | None = None  # None (these three too): the model's defaults
    width: int | None = None
    height: int | None = None
    warmup_steps: int = (
        2  # a short generation per dtype first, at the measured size (kernel selection, caches)
    )
    load_kwargs: dict = field(default_factory=dict)  # text_encoder / clip_model / vae for a single-file model
    note: str = ""  # printed in the report, e.g. "random weights: numerics and cost, not picture quality"


@dataclass
class StudyResult:
    meta: dict
    rows: list[dict]  # one per dtype, unavailable ones included with their reason
    images: list[dict]  # one per (dtype, prompt, seed)
    pictures: dict = field(default_factory=dict)  # (dtype, prompt_index, seed) -> PIL image

    def as_json(self) -> dict:
        return {"meta": self.meta, "rows": self.rows, "images": self.images}


class Unavailable(Exception):
    """This dtype cannot run in this build or on this device; the reason goes into the report."""


def check_dtypes(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in ALL_DTYPES]
    if unknown:
        raise NewbieError(f"unknown dtype {', '.join(unknown)} (choose from {', '.join(ALL_DTYPES)})")
    ordered = [REFERENCE] + [
        n for n in dict.fromkeys(names) if n != REFERENCE
    ]  # the reference always runs first
    return ordered


def load_dtype(name: str, cfg: StudyConfig):
    from newbie.pipeline.load import load

    kwargs = dict(device=cfg.device, text_dtype=cfg.text_dtype, vae_dtype="fp32", **cfg.load_kwargs)
    if name in QUANTIZED:
        if "quantize" not in inspect.signature(load).parameters:
            raise Unavailable("this build's newbie.load has no quantize option")
        kwargs["quantize"] = name  # compute dtype: load's "auto" (bf16 on GPU, fp32 on CPU)
    else:
        kwargs["dtype"] = name
    try:
        return load(cfg.model, **kwargs)
    except Exception as e:  # noqa: BLE001 - e.g. torchao missing or without kernels here: report, go on
        if name == REFERENCE:
            raise
        kind = "" if isinstance(e, NewbieError) else f"{type(e).__name__}: "
        raise Unavailable(f"cannot load: {kind}{_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU {platform.machine()} ({n} thread{'s' if n > 1 else ''})"


def measure(pipe, prompt: str, seed: int, gen_kwargs: dict):
    """One generation with its wall time and peak memory."""
    with memory.PeakMemory(pipe.device) as mem:
        t0 = time.perf_counter()
        gen = pipe.generate(prompt, seed=seed, **gen_kwargs)
        _sync(pipe.device)
        wall = time.perf_counter() - t0
    return gen, wall, mem.peak_gib


def image_record(dtype: str, prompt_index: int, seed: int, gen, wall: float, peak: float | None, ref) -> dict:
    image, recipe = gen.images[0], gen.recipes[0]
    pixels = np.asarray(image.convert("RGB"))
    guard = getattr(gen, "guard_events", None)  # None: this build has no fp16 guard
    rec = {
        "dtype": dtype,
        "prompt_index": prompt_index,
        "seed": seed,
        "s_per_image": wall,
        "s_per_step": gen.timings["denoise_s"] / recipe.steps,
        "timings": dict(gen.timings),
        "peak_gib": peak,
        "nan_count": int((~torch.isfinite(gen.latents)).sum()),
        "black": bool(pixels.max() < 2),
        "guard_events": None if guard is None else list(guard),
        "warnings": list(recipe.warnings),
        "recipe_dtype": recipe.dtype,  # what the DiT ran in: not the asked dtype after a guard fallback
        "psnr": None,
        "ssim": None,
        "max_pixel_error": None,
        "mse": None,
    }
    if ref is not None:
        diff = metrics.as_array(image) - metrics.as_array(ref)
        rec.update(
            psnr=metrics.psnr(image, ref),
            ssim=metrics.ssim(image, ref),
            max_pixel_error=metrics.max_abs_error(image, ref),
            mse=float(np.mean(diff**2)),
        )
    return rec


def summarize_dtype(
    dtype: str, compute: dict, pipe, images: list[dict], load_s: float, load_gib: float | None
) -> dict:
    """One report row; PSNR pools the squared error of every image (inf only when all are identical)."""
    n = len(images)
    guards = [r["guard_events"] for r in images]
    row = {
        "dtype": dtype,
        "available": True,
        "reason": "",
        "reference": dtype == REFERENCE,
        "compute": compute,  # as loaded
        "compute_after": dict(pipe.dtypes),  # the fp16 guard may have moved the DiT to a safe dtype
        "load_s": load_s,
        "load_gib": load_gib,
        "peak_gib": None
        if any(r["peak_gib"] is None for r in images)
        else max(r["peak_gib"] for r in images),
        "s_per_step": sum(r["s_per_step"] for r in images) / n,
        "s_per_image": sum(r["s_per_image"] for r in images) / n,
        "timings": {k: sum(r["timings"][k] for r in images) / n for k in images[0]["timings"]},
        "psnr": None,
        "psnr_min": None,
        "ssim": None,
        "max_pixel_error": None,
        "identical": None,
        "nan_count": sum(r["nan_count"] for r in images),
        "black_images": sum(r["black"] for r in images),
        "guard_intervened": None if any(g is None for g in guards) else any(bool(g) for g in guards),
        "guard_events": sorted({e for g in guards if g for e in g}),
        "warnings": sorted({w for r in images for w in r["warnings"]}),
        "images": n,
    }
    if dtype != REFERENCE:
        mse = sum(r["mse"] for r in images) / n
        row.update(
            psnr=math.inf if mse == 0 else 10 * math.log10(metrics.DATA_RANGE**2 / mse),
            psnr_min=min(r["psnr"] for r in images),
            ssim=sum(r["ssim"] for r in images) / n,
            max_pixel_error=max(r["max_pixel_error"] for r in images),
            identical=mse == 0,
        )
    return row


def unavailable_row(dtype: str, reason: str) -> dict:
    return {
        "dtype": dtype,
        "available": False,
        "reason": reason,
        "reference": False,
        "peak_gib": None,
        "s_per_step": None,
        "s_per_image": None,
        "psnr": None,
        "ssim": None,
        "max_pixel_error": None,
        "nan_count": None,
        "black_images": None,
        "guard_intervened": None,
    }


def run_study(
    cfg: StudyConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
) -> StudyResult:
    from newbie.bench.prompts import default_prompts, default_seeds, default_steps
    from newbie.version import __version__

    dtypes = check_dtypes(cfg.dtypes)
    rows, records, pictures = [], [], {}
    meta: dict = {}
    wall0, cpu0 = (
        time.perf_counter(),
        time.process_time(),
    )  # CPU time: a cost that other load does not inflate
    prompts, seeds = cfg.prompts, cfg.seeds
    for name in dtypes:
        dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        before = memory.resident_gib(dev)
        t0 = time.perf_counter()
        try:
            pipe = load_dtype(name, cfg)
        except Unavailable as e:
            log(f"{name}: unavailable ({e})")
            rows.append(unavailable_row(name, str(e)))
            continue
        load_s = time.perf_counter() - t0
        after = memory.resident_gib(pipe.device)
        load_gib = None if before is None or after is None else after - before
        if not meta:  # the reference fixes what every dtype is asked for
            prompts = list(prompts or default_prompts(pipe.spec.name))
            seeds = list(seeds if seeds is not None else default_seeds(pipe.spec.name))
            if not prompts or not seeds:
                raise NewbieError("the study needs at least one prompt and one seed")
            d = pipe.spec.sampling
            gen_kwargs = dict(
                steps=cfg.steps or default_steps(pipe.spec.name) or d.steps,
                sampler=cfg.sampler or d.sampler,
                cfg=d.cfg if cfg.cfg is None else cfg.cfg,
                width=cfg.width or d.width,
                height=cfg.height or d.height,
            )
            meta = study_meta(cfg, pipe, prompts, seeds, gen_kwargs, __version__)
        compute = dict(pipe.dtypes)
        log(f"{name}: loaded in {load_s:.1f}s (DiT {compute['dit']}, text {compute['text']})")
        try:
            pipe.generate(
                prompts[0],
                seed=seeds[0],
                **{**gen_kwargs, "steps": min(cfg.warmup_steps, gen_kwargs["steps"])},
            )
            images = []
            for pi, prompt in enumerate(prompts):
                for seed in seeds:
                    gen, wall, peak = measure(pipe, prompt, seed, gen_kwargs)
                    ref = pictures.get((REFERENCE, pi, seed))
                    rec = image_record(name, pi, seed, gen, wall, peak, None if name == REFERENCE else ref)
                    images.append(rec)
                    pictures[(name, pi, seed)] = gen.images[0]
                    log(
                        f"{name}: prompt {pi + 1} seed {seed}: {wall:.2f}s"
                        + (f", PSNR {rec['psnr']:.2f} dB" if rec["psnr"] is not None else "")
                    )
        except Exception as e:  # noqa: BLE001 - one dtype's failure (a kernel this device lacks, out of memory,
            # a quantization bug) must not throw away the others' minutes of work; the report names it
            if name == REFERENCE:
                raise
            reason = f"generation failed: {type(e).__name__}: {_one_line(e)}"
            log(f"{name}: {reason}")
            rows.append(unavailable_row(name, reason))
            pictures = {k: v for k, v in pictures.items() if k[0] != name}
            del pipe
            _free(dev)
            continue
        rows.append(summarize_dtype(name, compute, pipe, images, load_s, load_gib))
        records += images
        del pipe
        _free(dev)
    meta.update(study_wall_s=time.perf_counter() - wall0, study_cpu_s=time.process_time() - cpu0)
    return StudyResult(meta, rows, records, pictures)


def study_meta(
    cfg: StudyConfig, pipe, prompts: list[str], seeds: list[int], gen_kwargs: dict, version: str
) -> dict:
    dev = pipe.device
    meta = {
        "date": date.today().isoformat(),
        "newbie": version,
        "torch": torch.__version__,
        "device": device_name(dev),
        "device_type": dev.type,
        "model": pipe.folder.name,
        "spec": pipe.spec.name,
        "prompts": prompts,
        "seeds": seeds,
        **gen_kwargs,
        "warmup_steps": cfg.warmup_steps,
        "text_dtype": cfg.text_dtype or "same as the DiT dtype",
        "vae_dtype": "fp32",
        "memory_method": memory.method(dev),
        "note": cfg.note,
    }
    if dev.type == "cpu" and hasattr(os, "getloadavg"):
        meta["load_average_1min"] = os.getloadavg()[0]  # a busy machine inflates CPU timings: say so
    if dev.type == "cuda":
        meta["tf32"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
    return meta
