"""`newbie serve --parallel ...`: each job's image made by a group of processes instead of one device.

`--device cuda:0,cuda:1,cuda:2,cuda:3 --parallel sp:2` makes two groups of two GPUs (one worker each);
without --parallel serve keeps one replica per device. A group is started once and kept: every rank loads the
model and waits for jobs on its own queue (no collective while idle, so an idle server never times out).
The server process holds no model: requests are validated by rank 0 of the first group (in a thread of its
own, so a running job does not delay validation).

A job is sent to every rank of its group; rank 0 reports progress and returns the images. A cancel (or a
shutdown) answers at once, but the group finishes the abandoned image before it takes the next job: the
ranks must leave their collectives together. A rank that fails or dies takes its group down; the group's
later jobs fail with that one line.
"""

from __future__ import annotations

import atexit
import itertools
import queue as queue_mod
import sys
import threading
from pathlib import Path

from newbie.errors import NewbieError
from newbie.model.step_cache import StepPolicy
from newbie.parallel.launch import Group, GroupFailed, Placement, context

RESOLVE_TIMEOUT_S = 60.0


def _rank_loop(rank, world, device, layout, load, setup, commands, replies, resolves, resolved):
    import torch.distributed as dist

    from newbie.parallel.runner import run, setup_rank
    from newbie.serve.limits import PipelineValidator, to_request

    mesh, pipe = setup_rank(layout, load, device, **setup)  # step_cache, compile
    dist.barrier()  # every rank loaded before the group says it is ready
    if rank == 0:
        threading.Thread(
            target=_resolver, args=(PipelineValidator(pipe), resolves, resolved), daemon=True
        ).start()
        replies.put(("ready", pipe.folder.name, pipe.notice))
    while True:
        cmd = commands[rank].get()
        if cmd[0] == "stop":
            return
        _, job, params, images, data_dir = cmd

        def progress(d, job=job):
            replies.put(("step", job, d["step"], d["steps"]))

        try:
            req = to_request(pipe, params, data_dir, images)
        except NewbieError as e:  # every rank refuses the same input the same way
            if rank == 0:
                replies.put(("error", job, str(e)))
            continue
        gen = run(pipe, req, mesh, progress)
        if rank == 0:
            replies.put(("done", job, gen.images, gen.recipes))


def _resolver(validator, resolves, resolved) -> None:
    while True:
        n, settings = resolves.get()
        try:
            resolved.put((n, True, validator.resolve(settings)))
        except NewbieError as e:
            resolved.put((n, False, str(e)))


class GroupRunner:
    """A serve Runner (newbie.serve.worker.Runner) backed by one started process group."""

    def __init__(
        self,
        layout,
        placement: Placement,
        load: dict,
        step_cache: float | StepPolicy = 0.0,
        timeout_s: float = 1800.0,
        compile: bool = False,
    ):
        ctx = context(placement)
        self.name = f"{layout}@{','.join(sorted(set(placement.devices)))}"
        self.commands = [ctx.Queue() for _ in range(placement.world)]
        self.replies, self.resolves, self.resolved = ctx.Queue(), ctx.Queue(), ctx.Queue()
        self.group = Group(
            _rank_loop,
            (
                layout,
                load,
                {"step_cache": step_cache, "compile": compile},
                self.commands,
                self.replies,
                self.resolves,
                self.resolved,
            ),
            placement,
            timeout_s,
        )
        self.lock, self.resolve_lock = threading.Lock(), threading.Lock()
        self.jobs, self.resolves_made = itertools.count(1), itertools.count(1)
        self.abandoned: int | None = None
        self.broken: str | None = None
        atexit.register(self.close)
        msg = self._reply(lambda m: m[0] == "ready")
        self.model_name, self.notice = msg[1], msg[2]

    # -- the group --

    def _reply(self, accept):
        """The next reply `accept` takes, watching the group's health meanwhile."""
        while True:
            if self.broken:
                raise GroupFailed(self.broken)
            try:
                msg = self.replies.get(timeout=0.5)
            except queue_mod.Empty:
                try:
                    self.group.check()
                except NewbieError as e:  # a rank refused its setup (model folder, heads): bad input
                    self.broken = f"the parallel group is down: {e}"
                    raise
                except GroupFailed as e:
                    self.broken = f"the parallel group is down: {e}"
                    raise GroupFailed(self.broken) from None
                continue
            if accept(msg):
                return msg

    def _finish_abandoned(self) -> None:
        if self.abandoned is not None:
            job, self.abandoned = self.abandoned, None
            self._reply(lambda m: m[0] in ("done", "error") and m[1] == job)

    def run(self, params: dict, on_step, images=None, data_dir=None) -> tuple[list, list]:
        with self.lock:
            self._finish_abandoned()
            job = next(self.jobs)
            for q in self.commands:
                q.put(("run", job, params, images, Path(data_dir) if data_dir else None))
            while True:
                msg = self._reply(lambda m, job=job: m[1] == job)
                if msg[0] == "step":
                    try:
                        on_step(msg[2], msg[3])
                    except BaseException:
                        self.abandoned = job  # the ranks finish it; the next job waits for that
                        raise
                elif msg[0] == "done":
                    return msg[2], msg[3]
                else:
                    raise NewbieError(msg[2])

    def resolve(self, settings) -> dict:
        with self.resolve_lock:
            n = next(self.resolves_made)
            self.resolves.put((n, settings))
            while True:
                try:
                    got, ok, value = self.resolved.get(timeout=RESOLVE_TIMEOUT_S)
                except queue_mod.Empty:
                    raise GroupFailed("the parallel group did not answer a validation in time") from None
                if got == n:
                    break
        if not ok:
            raise NewbieError(value)
        return value

    def close(self) -> None:
        if self.group is None:
            return
        for q in self.commands:
            q.put(("stop",))
        self.group.stop(grace=10.0)
        self.group = None


def parallel_service(args, limits, load: dict):
    """The JobService of `newbie serve --parallel`: one GroupRunner per `world` devices. load: newbie.load()'s
    model keywords without the device (newbie.cli.model_args.load_kwargs)."""
    import torch

    from newbie.parallel.preflight import preflight
    from newbie.serve.service import JobService

    devices = [d.strip() for d in (args.device or "").split(",") if d.strip()]
    layout, _ = preflight(
        args.parallel,
        args.model,
        "cpu",
        compile=getattr(args, "compile", False),
        vram=getattr(args, "vram", None),
        comfy_dir=getattr(args, "comfy_dir", None),
    )
    if devices in ([], ["cuda"]) and torch.cuda.is_available():
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if devices in ([], ["cpu"]):
        groups = [Placement.for_world(layout.world, "cpu")]
    else:
        if len(devices) % layout.world:
            raise NewbieError(
                f"--parallel {layout} takes {layout.world} devices per group; --device lists {len(devices)}"
            )
        groups = [
            Placement.for_world(layout.world, ",".join(devices[i : i + layout.world]))
            for i in range(0, len(devices), layout.world)
        ]
    runners = [
        GroupRunner(
            layout, p, load, getattr(args, "step_cache", 0.0), compile=getattr(args, "compile", False)
        )
        for p in groups
    ]
    if runners[0].notice:
        print(runners[0].notice, file=sys.stderr)
    return JobService(Path(args.data_dir), runners[0], runners, limits, model_name=runners[0].model_name)
