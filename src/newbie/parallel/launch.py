"""Start one process per rank (no torchrun), run a function on each, and end the whole group on any failure.

GPUs: one process per listed CUDA device, NCCL, 'spawn' (CUDA cannot be forked). CPU: gloo, 'fork' where
available (the children reuse the parent's imports: a spawned child spends seconds importing transformers),
the cores split between the processes. The rendezvous is a free TCP port on 127.0.0.1.

Failure handling, so nothing hangs: a rank that raises sends one line to the parent, which stops every
process and raises; a rank that dies (killed, segfault, out of memory) is seen by the parent's join, which
stops the others; a collective waiting for a peer that never comes gives up after `timeout_s`.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import re
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from newbie.errors import NewbieError

OK, BAD_INPUT, FAILED = "ok", "bad-input", "failed"


class GroupFailed(RuntimeError):
    """A process of a parallel group failed at run time (not bad input); the message is one line."""


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: 'cpu' (gloo) or a list of CUDA devices, one per rank (NCCL)."""

    devices: tuple[str, ...]

    @property
    def world(self) -> int:
        return len(self.devices)

    @property
    def cuda(self) -> bool:
        return self.devices[0].startswith("cuda")

    @staticmethod
    def for_world(world: int, device: str | None) -> Placement:
        """--device (None, 'cpu', 'cuda', or a comma list of cuda:N) and a process count -> a Placement, or a
        one-line NewbieError when the machine cannot hold it."""
        names = [d.strip() for d in (device or "").split(",") if d.strip()]
        if not names:
            names = ["cuda" if torch.cuda.is_available() else "cpu"]
        if names == ["cpu"]:
            return Placement(("cpu",) * world)
        if any(not n.startswith("cuda") for n in names):
            raise NewbieError(f"--device {device}: give cpu, cuda, or a list of cuda:N devices")
        count = torch.cuda.device_count()
        if count == 0:
            raise NewbieError(
                f"--device {device}: no CUDA GPU is available (use --device cpu for CPU processes)"
            )
        if names == ["cuda"]:
            names = [f"cuda:{i}" for i in range(world)]
        if len(names) != world:
            raise NewbieError(
                f"{world} processes need {world} devices, --device lists {len(names)}: {device}"
            )
        if len(set(names)) != len(names):
            raise NewbieError(f"--device lists a device twice: {device}")
        for n in names:
            index = int(n.partition(":")[2] or 0) if n.partition(":")[2].isdigit() or n == "cuda" else -1
            if not 0 <= index < count:
                raise NewbieError(
                    f"{world} processes need {world} GPUs; {n} is not one of this machine's {count}"
                )
        return Placement(tuple(names))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _entry(
    rank: int, fn: Callable, args: tuple, placement: Placement, port: int, timeout_s: float, results
) -> None:
    world = placement.world
    device = placement.devices[rank]
    if placement.cuda:
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off (lent machines' rule)
        torch.cuda.set_device(torch.device(device))
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        dist.init_process_group(
            "nccl" if placement.cuda else "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
        report = (OK, rank, fn(rank, world, device, *args))
    except NewbieError as e:
        report = (BAD_INPUT, rank, str(e))
    except BaseException as e:  # noqa: BLE001 - any failure is reported as one line, then the group is ended
        if os.environ.get("NEWBIE_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        report = (FAILED, rank, one_line(e))
    results.put(report)  # before the teardown: a peer's broken collective must not be the first news
    if dist.is_initialized():
        with contextlib.suppress(Exception):  # a failed group may not tear down cleanly; the parent stops us
            dist.destroy_process_group()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# what a survivor sees when a peer has gone: a consequence, never the cause
_BROKEN = re.compile(
    r"Connection closed by peer|Connection reset|Broken pipe|NCCL communicator|abort|"
    r"Timed out|timed out|DistBackendError|DistNetworkError",
    re.IGNORECASE,
)


def _pending(results) -> list[tuple[int, str]]:
    out = []
    while True:
        try:
            status, rank, value = results.get(timeout=0.05)
        except queue_mod.Empty:
            return out
        if status != OK:
            out.append((rank, value))


def _root_cause(failures: list[tuple[int, str]]) -> tuple[int, str]:
    return next((f for f in failures if not _BROKEN.search(f[1])), failures[0])


def context(placement: Placement):
    """The multiprocessing context the group's processes (and any queue passed to them) are made in."""
    return mp.get_context("spawn" if placement.cuda or "fork" not in mp.get_all_start_methods() else "fork")


class Group:
    """Started rank processes running fn(rank, world, device, *args); `done` collects what they return."""

    def __init__(self, fn: Callable, args: tuple, placement: Placement, timeout_s: float = 1800.0):
        self.placement = placement
        ctx = context(placement)
        self.results = ctx.Queue()
        self.procs = mp.start_processes(
            _entry,
            args=(fn, args, placement, free_port(), timeout_s, self.results),
            nprocs=placement.world,
            join=False,
            start_method=ctx.get_start_method(),
        ).processes
        self.done: dict[int, Any] = {}

    def died(self) -> str | None:
        for i, p in enumerate(self.procs):
            if p.exitcode not in (None, 0):
                return (
                    f"rank {i} of {self.placement.world} {_exit_text(p.exitcode)}; all processes were stopped"
                )
        return None

    def check(self, wait: float = 0.0) -> None:
        """Collect what the ranks reported within `wait` seconds; on any failure stop them all and raise
        NewbieError (a rank refused its input) or GroupFailed (a rank failed or died)."""
        try:
            status, rank, value = self.results.get(timeout=wait) if wait else self.results.get_nowait()
        except queue_mod.Empty:
            death = self.died()
            if death:
                self.stop()
                raise GroupFailed(death) from None
            return
        if status == OK:
            self.done[rank] = value
            return
        # a peer's failure or death shows up on the survivors as a broken collective: name its cause
        time.sleep(0.5)
        failures = [(rank, value)] + _pending(self.results)
        death = self.died()
        self.stop()
        if status == BAD_INPUT:
            raise NewbieError(value)
        rank, value = _root_cause(failures)
        raise GroupFailed(
            death or f"rank {rank} of {self.placement.world} failed: {value}; all processes were stopped"
        )

    def exited(self) -> bool:
        return all(p.exitcode is not None for p in self.procs)

    def stop(self, grace: float = 0.0) -> None:
        """Let the processes exit for `grace` seconds, then SIGTERM, then SIGKILL what is left."""
        end = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        end = time.monotonic() + 10
        for p in self.procs:
            p.join(max(0.0, end - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()


def run_group(fn: Callable, args: tuple, placement: Placement, timeout_s: float = 1800.0) -> dict[int, Any]:
    """fn(rank, world, device, *args) on every rank; returns {rank: what fn returned}. Raises NewbieError
    (a rank refused its input) or GroupFailed (a rank failed or died), after every process has stopped."""
    group = Group(fn, args, placement, timeout_s)
    grace = 0.0
    try:
        while len(group.done) < placement.world:
            group.check(wait=0.2)
            if len(group.done) < placement.world and group.exited() and group.results.empty():
                missing = sorted(set(range(placement.world)) - set(group.done))
                raise GroupFailed(f"ranks {missing} exited without a result")
        grace = 30.0  # every rank answered: they are only tearing down
    finally:
        group.stop(grace)
    return group.done
