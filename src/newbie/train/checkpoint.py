"""The resumable state of a run, written atomically (temp file, fsync, rename): the LoRA weights, the
optimizer, the random generator, the data order and the losses so far. A run killed at any instant leaves
either the previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from newbie.errors import NewbieError
from newbie.train.dataset import epoch_order


@dataclass
class RunState:
    """Everything a step changes: the trainable weights, the optimizer, the training generator, where the run
    is in the data, and the losses so far. The data order of an epoch is a function of (seed, epoch)."""

    lora: torch.nn.Module
    optimizer: torch.optim.Optimizer
    counts: list[int]  # repeats of each item
    sizes: list[tuple[int, int]]  # bucket of each item
    batch: int
    seed: int
    gen: torch.Generator = field(default_factory=torch.Generator)
    step: int = 0
    epoch: int = 0
    pos: int = 0
    losses: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.gen.manual_seed(self.seed)
        self.order = self._order()

    def _order(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return epoch_order(self.counts, self.sizes, self.batch, gen)

    def next_ids(self) -> list[int]:
        """The next batch's item indices, starting a new epoch when this one is used up."""
        if self.pos >= len(self.order):
            self.epoch, self.pos = self.epoch + 1, 0
            self.order = self._order()
        self.pos += 1
        return self.order[self.pos - 1]

    def snapshot(self, config: dict) -> dict:
        return {
            "lora": self.lora.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.gen.get_state(),
            "step": self.step,
            "epoch": self.epoch,
            "pos": self.pos,
            "order": self.order,
            "losses": self.losses,
            "config": config,
        }

    def restore(self, state: dict) -> None:
        self.lora.load_state_dict(state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng"])
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.losses = list(state["losses"])
        self.order = self._order()


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
