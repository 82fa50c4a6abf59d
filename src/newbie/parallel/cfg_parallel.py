"""CFG-parallel: the conditional and unconditional branches of one image on two devices.

One process per GPU (torch.distributed: NCCL on GPUs, gloo on CPU). Every rank runs the pipeline's own core
path (`Pipeline.run`) with `Branches`: rank 0 encodes and runs the DiT on the prompt's embeddings, rank 1
on the negative's, at every step; the two velocities are exchanged with all_gather and both ranks combine
them with the unchanged `guided`, so both run the same sampler on the same numbers and their latents stay
identical. After cfg_trunc only the conditional branch is needed: rank 0 computes it and broadcasts it.
The samplers never know: only the model function is wrapped.

Each rank computes a batch-1 forward without padding, as one GPU does when the two captions differ in
length ("split" CFG batching), so the result matches the one-GPU image bit for bit on identical GPUs; when
the captions have equal length one GPU batches both branches, and the results agree to floating-point
tolerance only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from newbie.device import DTYPES
from newbie.model.step_cache import StepCache
from newbie.pipeline.pipeline import LOCAL, Generation, Pipeline
from newbie.pipeline.request import Request
from newbie.sampling.guidance import branch_model, guided

COND, UNCOND = 0, 1  # branch = rank


@dataclass(frozen=True)
class Branches:
    """One CFG branch per process of a two-process group (rank 0: cond, rank 1: uncond)."""

    rank: int
    world: int = 2
    group: object = None  # torch.distributed process group; None = the default group

    def src(self) -> int:
        """Global rank of the group's rank 0 (the conditional branch)."""
        return dist.get_global_rank(self.group, 0) if self.group is not None else 0

    def wanted(self, req: Request) -> tuple[bool, bool]:
        """Each rank encodes only its own branch's text."""
        return self.rank == COND, self.rank == UNCOND and req.uses_cfg

    def model(self, pipe: Pipeline, req: Request, cond, uncond, grid):
        cache = StepCache.of(pipe.step_cache) if pipe.step_cache else None
        mine = (
            branch_model(
                pipe.dit,
                cond if self.rank == COND else uncond,
                grid,
                pipe.device,
                DTYPES[pipe.dtypes["dit"]],
                cache,
            )
            if (self.rank == COND or req.uses_cfg)
            else None
        )
        model_cond = from_cond_rank(mine, self)
        if not req.uses_cfg:
            return model_cond
        return guided(gathered(mine, self), model_cond, req.cfg, req.cfg_trunc, req.renorm_cfg)


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


def share_request(req: Request, branches: Branches) -> Request:
    """Rank 0's request on every rank: a seed drawn at random on each rank would differ."""
    box = [req]
    dist.broadcast_object_list(box, src=branches.src(), group=branches.group)
    return box[0]


def generate(
    pipe: Pipeline, req: Request, branches: Branches | None = None, progress=None
) -> Generation | None:
    """One request with CFG-parallel: call on every rank with the same model folder. Rank 0 decodes and
    returns the Generation; the other rank returns None. img2img, inpainting and hires run as on one GPU. branches None: one process, both branches (the
    reference the parallel result is compared with)."""
    if branches is None:
        return pipe.run(req, progress, LOCAL)
    req = share_request(req, branches)
    gen = pipe.run(req, progress if branches.rank == 0 else None, branches)
    return gen if branches.rank == 0 else None


def sample(
    pipe: Pipeline, req: Request, branches: Branches, progress=None
) -> tuple[Request, torch.Tensor, dict]:
    """Like generate, but every rank returns (the shared request, its latents, timings): the ranks' latents
    are equal (what the tests and the benchmark check)."""
    req = share_request(req, branches)
    gen = pipe.run(req, progress if branches.rank == 0 else None, branches)
    return req, gen.latents, gen.timings
