"""Memory on the page: the planner's plan for the chosen size, the peak a generation reached, and a readable
out-of-memory message. The planner (newbie.memory.planner) is optional; without it the page says so."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

PLANNER_MISSING = "planner not available"


@dataclass
class PlanView:
    text: str  # one line for the page
    predicted_peak_gib: float | None = None
    detail: str = ""  # the planner's own description of the plan


def _planner():
    """The planner's plan(vram_gib, width, height), or None while newbie.memory.planner is absent."""
    import importlib

    try:
        module = importlib.import_module("newbie.memory.planner")
    except ModuleNotFoundError as e:
        if e.name and "newbie.memory.planner".startswith(e.name):
            return None
        raise
    return getattr(module, "plan", None) or getattr(module, "plan_for", None)


def plan_view(vram_gib: float, width: int, height: int, sizes=None) -> PlanView:
    """What the memory planner picks for this GPU size and image size (imported lazily: it is optional).
    sizes: the loaded model's ComponentSizes (default: the real NewBie Exp0.1's)."""
    from newbie.errors import NewbieError

    plan = _planner()
    if plan is None:
        return PlanView(PLANNER_MISSING)
    try:
        p = plan(vram_gib, width, height, *([] if sizes is None else [sizes]))
    except NewbieError as e:
        return PlanView(f"no plan fits: {e}")
    return PlanView(
        f"{p.name}, predicted peak {p.predicted_peak_gib:.1f} GiB", float(p.predicted_peak_gib), p.describe()
    )


def cpu_memory_line(pipe) -> str:
    """On a CPU there is no GPU plan to pick: the page says what the loaded weights take instead."""
    modules = (pipe.dit, pipe.text.gemma, pipe.text.jina, pipe.codec.vae)
    nbytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    size = f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"
    return (
        f"Memory: {pipe.folder.name} on the CPU, {size} of weights in RAM (GPU memory plans apply on a GPU)"
    )


def gpu_total_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def _rss_peak_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / 2**30 if sys.platform == "darwin" else kib / 2**20


@dataclass
class Measured:
    seconds: float = 0.0
    peak_gib: float | None = None
    peak_kind: str = ""


@contextmanager
def measure(device: torch.device):
    """Wall time and peak memory of the block: CUDA allocator peak on a GPU, process peak RSS on a CPU
    (the latter is the peak since the process started, so it is an upper bound for one generation)."""
    out = Measured()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.seconds = time.perf_counter() - t0
        if cuda:
            out.peak_gib, out.peak_kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda allocated"
        else:
            out.peak_gib, out.peak_kind = _rss_peak_gib(), "process RSS"


def out_of_memory_message(width: int, height: int, dtype: str, device: torch.device) -> str:
    """Out of memory, and the plan the planner proposes for the memory that is actually free now."""
    head = f"out of memory at {width}x{height} ({dtype} on {device.type})"
    if device.type != "cuda":
        return f"{head}; try a smaller size or close other programs"
    free, _total = torch.cuda.mem_get_info(device)
    view = plan_view(free / 2**30, width, height)
    if view.text == PLANNER_MISSING:
        return f"{head}; {free / 2**30:.1f} GiB free. Try a smaller size or another precision"
    return f"{head}; {free / 2**30:.1f} GiB free. Next plan to try: {view.text}"


def apply_plan(pipe, vram_gib: float, width: int, height: int) -> str | None:
    """On a GPU, fit the loaded pipeline to the page's memory budget (the same planner as `--vram`).
    Returns the plan's description, or None on a CPU where there is nothing to plan."""
    if pipe.device.type != "cuda":
        return None
    from newbie.memory.planner import ComponentSizes, plan_for

    plan = plan_for(vram_gib, width, height, ComponentSizes.of(pipe))
    if pipe.plan is None or pipe.plan.name != plan.name:
        pipe.apply_plan(plan)
    return plan.describe()
