"""Start one process per rank (no torchrun), run a function on each, and end the whole group on any failure.

GPUs: one process per listed CUDA device, NCCL, 'spawn' (CUDA cannot be forked). CPU: gloo, 'fork' where
available (the children reuse the parent's imports: a spawned child spends seconds importing transformers),
the cores split between the processes. The rendezvous is a free TCP port on 127.0.0.1.

Failure handling, so nothing hangs: a rank that raises sends one line to the parent, which stops every
process and raises; a rank that dies (killed, segfault, out of memory) is seen by the parent's join, which
stops the others; a collective waiting for a peer that never comes gives up after `timeout_s`.
"""

from __future__ import annotations

import os
import queue as queue_mod
import re
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

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
    def for_world(world: int, device: str | None) -> "Placement":
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
            raise NewbieError(f"--device {device}: no CUDA GPU is available (use --device cpu for CPU processes)")
        if names == ["cuda"]:
            names = [f"cuda:{i}" for i in range(world)]
        if len(names) != world:
            raise NewbieError(f"{world} processes need {world} devices, --device lists {len(names)}: {device}")
        if len(set(names)) != len(names):
            raise NewbieError(f"--device lists a device twice: {device}")
        for n in names:
            index = int(n.partition(":")[2] or 0) if n.partition(":")[2].isdigit() or n == "cuda" else -1
            if not 0 <= index < count:
                raise NewbieError(f"{world} processes need {world} GPUs; {n} is not one of this machine's {count}")
        return Placement(tuple(names))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _entry(rank: int, fn: Callable, args: tuple, placement: Placement, port: int, timeout_s: float, results) -> None:
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
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a failed group may not tear down cleanly; the parent stops us anyway
            pass


def _stop(ctx, grace: float = 0.0) -> None:
    """Let the processes exit for `grace` seconds, then SIGTERM, then SIGKILL what is left."""
    end = time.monotonic() + grace
    for p in ctx.processes:
        p.join(max(0.0, end - time.monotonic()))
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 10
    for p in ctx.processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# what a survivor sees when a peer has gone: a consequence, never the cause
_BROKEN = re.compile(r"Connection closed by peer|Connection reset|Broken pipe|NCCL communicator|abort|"
                     r"Timed out|timed out|DistBackendError|DistNetworkError", re.IGNORECASE)


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


def run_group(fn: Callable, args: tuple, placement: Placement, timeout_s: float = 1800.0) -> dict[int, Any]:
    """fn(rank, world, device, *args) on every rank; returns {rank: what fn returned}. Raises NewbieError
    (a rank refused its input) or GroupFailed (a rank failed or died), after every process has stopped."""
    method = "spawn" if placement.cuda or "fork" not in mp.get_all_start_methods() else "fork"
    results = mp.get_context(method).Queue()
    ctx = mp.start_processes(
        _entry,
        args=(fn, args, placement, free_port(), timeout_s, results),
        nprocs=placement.world,
        join=False,
        start_method=method,
    )
    out: dict[int, Any] = {}

    def died() -> str | None:
        for i, p in enumerate(ctx.processes):
            if p.exitcode not in (None, 0):
                return f"rank {i} of {placement.world} {_exit_text(p.exitcode)}; all processes were stopped"
        return None

    grace = 0.0
    try:
        while len(out) < placement.world:
            try:
                status, rank, value = results.get(timeout=0.2)
            except queue_mod.Empty:
                death = died()
                if death:
                    raise GroupFailed(death) from None
                if all(p.exitcode == 0 for p in ctx.processes) and results.empty():
                    missing = sorted(set(range(placement.world)) - set(out))
                    raise GroupFailed(f"ranks {missing} exited without a result") from None
                continue
            if status == OK:
                out[rank] = value
            elif status == BAD_INPUT:
                raise NewbieError(value)
            else:
                # a peer's failure or death shows up on the survivors as a broken collective: name its cause
                time.sleep(0.5)
                rank, value = _root_cause([(rank, value)] + _pending(results))
                raise GroupFailed(died() or f"rank {rank} of {placement.world} failed: {value}; all processes "
                                  "were stopped")
        grace = 30.0  # every rank answered: they are only tearing down
    finally:
        _stop(ctx, grace)
    return out
