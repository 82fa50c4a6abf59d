"""The resumable state of a run, written atomically (temp file, fsync, rename): the LoRA weights, the
optimizer, the random generator, the data order and the losses so far. A run killed at any instant leaves
either the previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from newbie.errors import NewbieError


def path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".state.pt")


def save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # the rename itself is durable only once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: Path, config: dict) -> dict:
    """The saved state; refuses one written for other settings (a resumed run must be the same run)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise NewbieError(f"{path}: cannot read the training checkpoint ({e})") from None
    saved = state.get("config", {})
    diff = sorted(k for k in config if k != "steps" and saved.get(k) != config[k])
    if diff:
        k = diff[0]
        raise NewbieError(
            f"{path}: was written with {k}={saved.get(k)!r}, this run has {k}={config[k]!r}; "
            "resume with the same settings or drop --resume"
        )
    return state
