"""What `newbie generate` checks before loading any weights, besides the request's own rules (its values and
its XML: pipeline.request.check): the output path, the device string, the LoRA and image files. Each problem is
one NewbieError line (exit 2), seconds or a minute earlier than the model load would reach it, and never after
a whole generation."""

from __future__ import annotations

import os
from pathlib import Path

from newbie.errors import NewbieError


def check_device(device: str | None) -> None:
    """A device torch can parse, and a GPU that exists when one is named."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise NewbieError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NewbieError(f"device '{device}' was asked for but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NewbieError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type not in ("cpu", "mps"):
        raise NewbieError(f"unsupported device '{device}' (use cpu, cuda or cuda:N)")


def check_writable_folder(folder: Path, what: str = "--out") -> None:
    """The folder exists and is writable, or can be created: its first existing ancestor is a writable folder."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NewbieError(f"{what}: '{probe}' is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise NewbieError(f"{what}: cannot write in '{probe}' (permission denied)")


def check_files(args) -> None:
    """--lora, --init-image and --mask name readable files (or, for a LoRA, a PEFT folder)."""
    from newbie.adapters.stack import parse_lora

    for text in getattr(args, "loras", None) or []:
        path = Path(parse_lora(text)[0]).expanduser()
        if not path.exists():
            raise NewbieError(f"--lora {text}: no such file or folder")
    for flag in ("init_image", "mask"):
        value = getattr(args, flag, None)
        if value and not Path(value).expanduser().is_file():
            raise NewbieError(f"--{flag.replace('_', '-')} {value}: no such image")
