"""One image on several processes: the per-rank setup and the parent-side `generate`.

Each rank loads the model on its device and makes it parallel once (`configure`): the DiT gets its sp group
(Ulysses), the text encoders answer from the group's rank 0 (broadcast, so every rank conditions on the same
numbers whatever the sp degree), the VAE decode is split in bands across the group. Then the pipeline's own
core path runs on every rank: `Pipeline.run` for sp only, CFG-parallel's `generate` with the rank's cfg group
for cfg x sp. Rank 0 returns the Generation.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from newbie.errors import NewbieError
from newbie.model.step_cache import StepPolicy
from newbie.parallel.launch import Placement, run_group
from newbie.parallel.mesh import Layout, Mesh, build_mesh
from newbie.parallel.sequence import SequenceGroup, check_heads, shard_model


class SharedText:
    """TextEncoders whose encode runs on the sp group's rank 0 and is broadcast to the group (every other
    attribute is the wrapped encoders')."""

    def __init__(self, text, sp: SequenceGroup, src: int):
        self.text, self.sp, self.src = text, sp, src

    def __getattr__(self, name):
        return getattr(self.text, name)

    def encode(self, prompts):
        box = [self.text.encode(prompts).to("cpu") if self.sp.rank == 0 else None]
        dist.broadcast_object_list(box, src=self.src, group=self.sp.group)
        return box[0]


def configure(pipe, mesh: Mesh) -> None:
    """Make a loaded Pipeline one member of the mesh (once per process)."""
    cfg = pipe.dit.cfg
    check_heads(cfg.n_heads, cfg.n_kv_heads, mesh.layout.sp)
    sp = mesh.sequence()
    if sp is None:
        return
    if getattr(pipe, "plan", None) is not None:
        raise NewbieError("--vram plans and sequence parallelism cannot be combined; drop one")
    from newbie.parallel.vae import BandCodec

    cache = getattr(pipe, "embed_cache", None)
    if cache is not None and getattr(cache, "folder", None) is not None:
        # a disk cache shared by the ranks could hit on one rank and miss on another, and only a miss joins
        # the text broadcast: keep each rank's cache in its own memory
        cache.folder = None
    shard_model(pipe.dit, sp)
    pipe.text = SharedText(pipe.text, sp, mesh.sp_src())
    pipe.codec = BandCodec(pipe.codec, sp)


def run(pipe, req, mesh: Mesh, progress=None):
    """The request on this rank; the Generation on global rank 0, None elsewhere."""
    progress = progress if mesh.rank == 0 else None
    if mesh.layout.cfg == 1:
        gen = pipe.run(req, progress)
    else:
        from newbie.parallel import cfg_parallel

        gen = cfg_parallel.generate(
            pipe, req, cfg_parallel.Branches(mesh.cfg_rank, 2, mesh.cfg_group), progress
        )
    return gen if mesh.rank == 0 else None


@dataclass(frozen=True)
class Job:
    """Everything a rank needs, picklable: newbie.load keyword arguments (no device) and Pipeline.request
    ones (the seed fixed by the parent, so every rank asks for the same image)."""

    layout: Layout
    load: dict
    prompt: str | list[str]
    negative: str | None
    settings: dict
    progress: Callable[[int], Callable] | None = None  # total steps -> rank 0's step callback
    step_cache: float | StepPolicy = 0.0  # a first-block threshold or a policy; 0 = off
    compile: bool = False


def setup_rank(
    layout: Layout, load: dict, device: str, step_cache: float | StepPolicy = 0.0, compile: bool = False
):
    """One rank's start: its place in the mesh, the model loaded on its device and set for the group, then
    compiled if asked (every rank together: the warm-up generations are collective). Returns (mesh, pipe)."""
    from newbie.pipeline.load import load as load_pipeline

    mesh = build_mesh(layout)
    pipe = load_pipeline(**load, device=device)
    if step_cache:
        pipe.step_cache = step_cache
    configure(pipe, mesh)
    if compile:
        pipe.compile()
    return mesh, pipe


def _rank_main(rank: int, world: int, device: str, job: Job):
    mesh, pipe = setup_rank(job.layout, job.load, device, job.step_cache, job.compile)
    req = pipe.request(job.prompt, job.negative, **job.settings)
    bar = None
    if job.progress and rank == 0:
        bar = job.progress(getattr(req, "total_steps", req.steps))
    gen = run(pipe, req, mesh, bar)
    if gen is None:
        return None
    # numpy: pickled by value through the result queue (a tensor would go through shared memory)
    return dataclasses.replace(gen, latents=gen.latents.cpu().numpy()), pipe.notice


def generate(
    layout: Layout,
    placement: Placement,
    load: dict,
    prompt,
    negative=None,
    *,
    progress: Callable[[int], Callable] | None = None,
    step_cache: float | StepPolicy = 0.0,
    compile: bool = False,
    timeout_s: float = 1800.0,
    **settings,
):
    """One request on layout.world new processes (placement: their devices) -> (Generation, model notice).
    settings: Pipeline.request keyword arguments; a missing seed is drawn here, once. progress: a picklable
    factory, total steps -> rank 0's step callback (the CLI's progress bar)."""
    if placement.world != layout.world:
        raise NewbieError(
            f"--parallel {layout} needs {layout.world} processes, the placement has {placement.world}"
        )
    if settings.get("seed") is None:
        settings["seed"] = secrets.randbelow(2**32)
    job = Job(layout, dict(load), prompt, negative, settings, progress, step_cache, compile)
    results = run_group(_rank_main, (job,), placement, timeout_s)
    gen, notice = results[0]
    return dataclasses.replace(gen, latents=torch.from_numpy(gen.latents)), notice
