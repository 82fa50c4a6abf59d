"""The compute device and the dtype names every loader accepts (`--device`, `--dtype`, newbie.load's keywords)."""

from __future__ import annotations

import torch

from newbie.errors import NewbieError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | None) -> torch.device:
    """The compute device: the one asked for (refused when it is CUDA and there is none), else CUDA if any."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NewbieError("device 'cuda' was asked for but no CUDA GPU is available")
    return dev


def parse_dtype(name: str, device: torch.device) -> str:
    """A dtype name ("auto" = bf16 on a GPU, fp32 on a CPU) -> one of DTYPES' keys, or a one-line error."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise NewbieError(f"unknown dtype '{name}' (choose from auto, {', '.join(DTYPES)})")
    return name


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
