"""The guards and retry policy around a run: what happens when a number goes bad or the GPU runs out of memory.
Plain functions taking the Pipeline (`pipe`), called from `Pipeline.run` / `Pipeline._run`.

- fp16 NaN/overflow in the DiT: re-run the pass clamped to the fp16 range, then in a safe dtype.
- NaN/Inf in the text embeddings or the VAE decode: re-run that stage in a safe dtype / fp32.
- GPU memory: a budget plan is fitted to each request up front, and an out-of-memory error steps down to
  the next smaller plan and runs the request again.
- A finished image's problems (NaN/Inf, all black) are written into its recipe's warnings."""

from __future__ import annotations

import sys

import torch

from newbie.errors import NewbieError
from newbie.model.text import TextEmbeds
from newbie.pipeline.request import Request
from newbie.precision.guard import NonFinite, all_finite, safe_dtype, set_clamp

SAFE_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}


def run_stepping_down(pipe, req: Request, attempt):
    """attempt() (one run of req), fitted to the budget first; on running out of GPU memory, again with the
    next smaller memory plan, until the smallest one fails too."""
    fit_plan(pipe, req)
    while True:
        try:
            return attempt()
        except torch.cuda.OutOfMemoryError:
            smaller = step_down(pipe, req)
            if smaller is None:
                raise NewbieError(
                    f"out of GPU memory at {req.width}x{req.height} even with the smallest plan "
                    f"('{pipe.plan.name if pipe.plan else 'resident'}')"
                ) from None


def fit_plan(pipe, req: Request) -> None:
    """A plan chosen from a budget at load time was sized for one image at the load size: a request that is
    larger (its size, its hires target, its batch) gets the plan the budget allows for it, up front,
    rather than an out-of-memory error. Plans only ever step down here."""
    from newbie.memory.planner import plan_for, rank

    if pipe.plan is None or pipe.plan.budget_gib is None or pipe.device.type != "cuda":
        return
    w, h = (req.hires.width, req.hires.height) if req.hires else (req.width, req.height)
    fitting = plan_for(pipe.plan.budget_gib, w, h, pipe.component_sizes, batch=len(req.prompts))
    if rank(fitting, pipe.component_sizes) > rank(pipe.plan, pipe.component_sizes):
        note = (
            f"plan '{pipe.plan.name}' does not fit {w}x{h} x{len(req.prompts)} in "
            f"{pipe.plan.budget_gib:g} GiB; using plan '{fitting.name}'"
        )
        print(f"warning: {note}", file=sys.stderr)
        pipe.apply_plan(fitting)
        pipe.plan_notes.append(note)


def step_down(pipe, req: Request):
    """Apply the next smaller plan after an out-of-memory error; None when there is none (or off CUDA)."""
    from newbie.memory.planner import Plan
    from newbie.memory.planner import step_down as next_plan

    if pipe.device.type != "cuda":
        return None
    current = pipe.plan or Plan("resident")
    smaller = next_plan(current, req.width, req.height, pipe.component_sizes)
    if smaller is None:
        return None
    torch.cuda.empty_cache()
    note = f"out of GPU memory with plan '{current.name}'; retrying with plan '{smaller.name}'"
    print(f"warning: {note}", file=sys.stderr)
    pipe.apply_plan(smaller)
    pipe.plan_notes.append(note)
    return smaller


def encode_text_guarded(pipe, prompt: str, events: list[str]) -> TextEmbeds:
    """One prompt through the text encoders; NaN/Inf in the embeddings: the encoders go to a safe dtype and
    the prompt is encoded again."""
    e = pipe.text.encode([prompt])
    if all_finite(e.cap_feats) and all_finite(e.pooled):
        return e
    safe = safe_dtype(pipe.device)
    if pipe.text.gemma.dtype == safe and pipe.text.jina.dtype == safe:
        raise NewbieError("the text encoders produced NaN/Inf even in a safe dtype")
    pipe.text.gemma.to(safe), pipe.text.jina.to(safe)
    pipe.dtypes["text"] = SAFE_NAMES[safe]
    events.append(f"NaN/Inf in the text embeddings: re-encoded in {pipe.dtypes['text']}")
    return pipe.text.encode([prompt])


def denoise_guarded(pipe, req: Request, cond, uncond, sigmas, start, progress, branches, events: list[str]):
    """Pipeline.denoise, run again after each fp16 fallback step until it finishes finite."""
    while True:
        try:
            return pipe.denoise(req, cond, uncond, sigmas, start, progress, branches)
        except NonFinite as e:
            fp16_fallback(pipe, e, events, req)


def fp16_fallback(pipe, e: NonFinite, events: list[str], req: Request) -> None:
    """First overflow: clamp the DiT activations to the fp16 range; second: run the DiT in a safe dtype."""
    if not pipe.dit.layers[0].clamp_fp16:
        set_clamp(pipe.dit, True)
        events.append(f"fp16 overflow ({e.where}): re-ran with the DiT activations clamped to fp16 range")
        return
    safe = safe_dtype(pipe.device)
    if next(pipe.dit.parameters()).dtype == safe:
        raise NewbieError(f"NaN/Inf in {e.where} even in {safe}") from None
    if pipe.plan is not None and pipe.plan.quantize:
        raise NewbieError(
            f"fp16 overflow ({e.where}) under the quantized plan '{pipe.plan.name}': "
            "load with --dtype bf16 instead"
        ) from None
    if pipe.plan is not None:  # the plan keeps its own CPU copies of the weights: convert, then re-plan
        pipe.adapters.clear()
    pipe.dit.to(safe)
    set_clamp(pipe.dit, False)
    pipe.dtypes["dit"] = SAFE_NAMES[safe]
    if pipe.plan is not None:
        pipe.apply_plan(pipe.plan)
        pipe.adapters.activate(pipe.dit, req.loras, req.fuse_loras)
    events.append(f"fp16 overflow persisted ({e.where}): re-ran the DiT in {pipe.dtypes['dit']}")


def decode_guarded(pipe, latents: torch.Tensor, events: list[str]) -> torch.Tensor:
    """The VAE decode; NaN/Inf in the pixels from finite latents: the VAE goes to fp32 and decodes again."""
    images = pipe.codec.decode(latents)
    if all_finite(images) or not all_finite(latents) or pipe.codec.dtype == torch.float32:
        return images
    pipe.codec.vae.to(torch.float32)
    pipe.dtypes["vae"] = "fp32"
    events.append("NaN/Inf in the VAE decode: re-decoded in fp32")
    return pipe.codec.decode(latents)


def problems(latents: torch.Tensor, images: torch.Tensor) -> list[list[str]]:
    """Per image, what is wrong with it (NaN/Inf latents or pixels, an all-black image): its recipe's warnings."""
    out = []
    for lat, img in zip(latents, images):
        p = []
        if not bool(torch.isfinite(lat).all()):
            p.append("latent has NaN/Inf values")
        if not bool(torch.isfinite(img).all()):
            p.append("image has NaN/Inf values")
        elif float(img.max()) < 2 / 255:
            p.append("image is all black")
        out.append(p)
    return out
