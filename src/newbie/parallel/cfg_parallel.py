"""CFG-parallel: the conditional and unconditional branches of one image on two devices.

One process per GPU (torch.distributed: NCCL on GPUs, gloo on CPU). Rank 0 runs the DiT on the prompt's
embeddings, rank 1 on the negative's, at every step; the two velocities are exchanged with all_gather and
both ranks combine them with the unchanged `guided`, so both run the same sampler on the same numbers and
their latents stay identical. After cfg_trunc only the conditional branch is needed: rank 0 computes it
and broadcasts it. The samplers never know: only the model function is wrapped.

Each rank computes a batch-1 forward without padding, as `Pipeline.denoise` does for one GPU when the two
captions differ in length ("split" CFG batching), so the result matches the one-GPU image bit for bit on
identical GPUs; when the captions have equal length one GPU batches both branches, and the results agree
to floating-point tolerance only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from newbie.errors import NewbieError
from newbie.model.text import TextEmbeds
from newbie.pipeline.images import to_pil
from newbie.pipeline.pipeline import DTYPES, Generation, Pipeline, Request
from newbie.sampling.guidance import guided, split_pair, velocity_fn
from newbie.sampling.samplers import SAMPLERS
from newbie.sampling.schedules import flow_sigmas

COND, UNCOND = 0, 1  # branch = rank


@dataclass(frozen=True)
class Branches:
    """Which branches this process runs: world 1 = both, one after the other (the reference); world 2 =
    the branch of its rank."""

    rank: int = 0
    world: int = 1
    group: object = None  # torch.distributed process group; None = the default group

    @staticmethod
    def from_dist(group=None) -> "Branches":
        if not dist.is_initialized():
            raise NewbieError("CFG-parallel needs torch.distributed initialized (run under torchrun)")
        world = dist.get_world_size(group)
        if world != 2:
            raise NewbieError(f"CFG-parallel runs on exactly 2 processes (cond + uncond), got {world}")
        return Branches(dist.get_rank(group), world, group)

    @property
    def mine(self) -> tuple[int, ...]:
        return (COND, UNCOND) if self.world == 1 else (self.rank,)

    def src(self) -> int:
        """Global rank of the group's rank 0 (the conditional branch)."""
        return dist.get_global_rank(self.group, 0) if self.group is not None else 0


def share_request(req: Request, branches: Branches) -> Request:
    """Rank 0's request on every rank: a seed drawn at random on each rank would differ."""
    if branches.world == 1:
        return req
    box = [req]
    dist.broadcast_object_list(box, src=branches.src(), group=branches.group)
    return box[0]


def encode(pipe: Pipeline, req: Request, branches: Branches) -> dict[int, TextEmbeds]:
    """The text embeddings of this process's branches (each rank encodes only its own prompt)."""
    texts = {COND: req.prompts, UNCOND: [req.negative] * len(req.prompts)}
    wanted = [b for b in branches.mine if b == COND or req.cfg != 1.0]
    return {b: pipe.text.encode(texts[b]) for b in wanted}


def _branch_model(pipe: Pipeline, req: Request, embeds: TextEmbeds):
    f = pipe.codec.cfg.downscale * pipe.dit.cfg.patch_size
    e = embeds.trimmed().to(pipe.device, DTYPES[pipe.dtypes["dit"]])
    rope = pipe.dit.rope(e.cap_mask.sum(1), e.cap_feats.shape[1], req.height // f, req.width // f)
    threshold = getattr(pipe, "step_cache", 0.0)
    if threshold:
        from newbie.model.step_cache import StepCache

        return velocity_fn(pipe.dit, e, rope, StepCache(threshold))
    return velocity_fn(pipe.dit, e, rope)


def gathered(mine, branches: Branches):
    """model_pair for `guided`: this rank's velocity, all_gather'ed into [cond; uncond] (rank order)."""

    def model(x: torch.Tensor, sigma: float) -> torch.Tensor:
        v = mine(x, sigma).contiguous()
        parts = [torch.empty_like(v) for _ in range(branches.world)]
        dist.all_gather(parts, v, group=branches.group)
        return torch.cat(parts)

    return model


def from_cond_rank(mine, branches: Branches):
    """model_cond for `guided`: rank 0 computes the conditional velocity, the other rank receives it."""

    def model(x: torch.Tensor, sigma: float) -> torch.Tensor:
        if branches.rank == COND:
            v = mine(x, sigma).contiguous()
        else:
            v = torch.empty(x.shape, dtype=torch.float32, device=x.device)  # velocity_fn returns fp32
        dist.broadcast(v, src=branches.src(), group=branches.group)
        return v

    return model


def denoise(
    pipe: Pipeline, req: Request, embeds: dict[int, TextEmbeds], branches: Branches, progress=None
) -> torch.Tensor:
    """The sampler loop with the branches spread over the ranks; every rank returns the same latents."""
    models = {b: _branch_model(pipe, req, e) for b, e in embeds.items()}
    if branches.world == 1:
        model_cond = models[COND]
        model_pair = split_pair(models[COND], models[UNCOND]) if req.cfg != 1.0 else None
    else:
        mine = models.get(branches.rank)
        model_cond = from_cond_rank(mine, branches)
        model_pair = gathered(mine, branches) if req.cfg != 1.0 else None
    model = (
        model_cond
        if model_pair is None
        else guided(model_pair, model_cond, req.cfg, req.cfg_trunc, req.renorm_cfg)
    )
    x = pipe.noise(req)
    sigmas = flow_sigmas(req.steps, req.shift)
    return SAMPLERS[req.sampler](model, x, sigmas, callback=progress if branches.rank == 0 else None)


def _stage(pipe: Pipeline, name: str):
    """The pipeline's weight-residency stage (a memory plan moves weights in and out), when it has one."""
    return pipe.stage(name) if hasattr(pipe, "stage") else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample(
    pipe: Pipeline, req: Request, branches: Branches = Branches(), progress=None
) -> tuple[Request, torch.Tensor, dict[str, float]]:
    """Encode and denoise on every rank -> (the shared request, latents, timings); the latents are equal
    on all ranks."""
    req = share_request(req, branches)
    if getattr(req, "image", None) is not None or getattr(req, "hires", None) is not None:
        raise NewbieError("CFG-parallel runs text-to-image only (no init image, mask or hires pass)")
    if hasattr(pipe, "adapters"):  # the request's LoRAs, or none: as Pipeline.run does
        pipe.adapters.activate(pipe.dit, req.loras, req.fuse_loras)
    timings = {}
    t0 = time.perf_counter()
    with _stage(pipe, "text"):
        embeds = encode(pipe, req, branches)
    timings["encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _stage(pipe, "denoise"):
        latents = denoise(pipe, req, embeds, branches, progress)
    _sync(pipe.device)
    timings["denoise_s"] = time.perf_counter() - t0
    return req, latents, timings


def generate(
    pipe: Pipeline, req: Request, branches: Branches = Branches(), progress=None
) -> Generation | None:
    """One request with CFG-parallel: call on every rank with the same model folder. Rank 0 decodes and
    returns the Generation; the other rank returns None."""
    req, latents, timings = sample(pipe, req, branches, progress)
    if branches.rank != 0:
        return None
    t0 = time.perf_counter()
    with _stage(pipe, "decode"):
        images = pipe.codec.decode(latents)
    timings["decode_s"] = time.perf_counter() - t0
    finite = bool(torch.isfinite(latents).all())
    warnings = req.warnings + ([] if finite else ["latent has NaN/Inf values"])
    recipes = [pipe.recipe(req, i, warnings) for i in range(len(req.prompts))]
    return Generation(to_pil(images), recipes, latents.cpu(), timings)
