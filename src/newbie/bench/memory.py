"""Peak memory of one call, measured the way the device allows.

CUDA: torch.cuda.max_memory_allocated over the call after a reset: everything the call held at its peak,
weights included. CPU (Linux): the growth of the process's peak resident set over the call; the peak (VmHWM)
is reset first by writing 5 to /proc/self/clear_refs, so earlier work does not hide it. Weights already
resident are not counted. Elsewhere the CPU figure is None.
"""

from __future__ import annotations

from pathlib import Path

import torch

GIB = 2**30
CUDA_METHOD = "CUDA max_memory_allocated during the generate call (weights included)"
CPU_METHOD = (
    "CPU peak resident-set growth during the generate call (VmHWM reset through /proc/self/clear_refs; "
    "weights already resident are not counted)"
)
NO_METHOD = "not measured (no CUDA, and /proc/self/clear_refs is unavailable)"


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def method(device: torch.device) -> str:
    if device.type == "cuda":
        return CUDA_METHOD
    return CPU_METHOD if _reset_cpu_peak() else NO_METHOD


def resident_gib(device: torch.device) -> float | None:
    """What is held now: allocated CUDA memory, or the process's resident set on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / GIB
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024 / GIB


class PeakMemory:
    """with PeakMemory(device) as mem: ...  then mem.peak_gib (None when it cannot be measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_gib: float | None = None
        self._base_kib: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _reset_cpu_peak():
            self._base_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_gib = torch.cuda.max_memory_allocated(self.device) / GIB
        elif self._base_kib is not None:
            peak = _status_kib("VmHWM")
            self.peak_gib = None if peak is None else max(0, peak - self._base_kib) * 1024 / GIB
