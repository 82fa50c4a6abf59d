"""The cfg x sp device mesh: which processes share a CFG branch pair and which share one DiT forward.

Global rank = cfg_rank * sp + sp_rank. The sp group of a process is the sp processes of its CFG branch (they
split the sequence); its cfg group is the processes with the same sp_rank in the two branches (they exchange
velocities as CFG-parallel does). With cfg 1 there is no cfg group; with sp 1 no sp group, and the DiT runs
today's one-process path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from newbie.errors import NewbieError
from newbie.parallel.sequence import SequenceGroup

AXES = ("cfg", "sp")


@dataclass(frozen=True)
class Layout:
    cfg: int = 1
    sp: int = 1

    @property
    def world(self) -> int:
        return self.cfg * self.sp

    def __str__(self) -> str:
        return ",".join(f"{a}:{getattr(self, a)}" for a in AXES if getattr(self, a) > 1) or "sp:1"


def parse_layout(text: str) -> Layout:
    """'sp:2', 'cfg:2', 'cfg:2,sp:2' -> Layout; anything else is a one-line NewbieError."""
    values: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        axis, sep, degree = part.partition(":")
        axis = axis.strip().lower()
        if not sep or axis not in AXES:
            raise NewbieError(f"--parallel: '{part}' is not cfg:N or sp:N (e.g. sp:2, cfg:2, cfg:2,sp:2)")
        if axis in values:
            raise NewbieError(f"--parallel names {axis} twice: {text}")
        try:
            values[axis] = int(degree)
        except ValueError:
            raise NewbieError(f"--parallel: {axis} degree '{degree}' is not a whole number") from None
        if values[axis] < 1:
            raise NewbieError(f"--parallel: {axis} degree must be >= 1, got {values[axis]}")
    if values.get("cfg", 1) not in (1, 2):
        raise NewbieError(f"--parallel: cfg is 1 or 2 (one process per CFG branch), got {values['cfg']}")
    return Layout(**values)


@dataclass(frozen=True)
class Mesh:
    layout: Layout
    rank: int
    cfg_group: object = None  # None when cfg == 1
    sp_group: object = None  # None when sp == 1

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.layout.sp

    @property
    def sp_rank(self) -> int:
        return self.rank % self.layout.sp

    def sequence(self) -> SequenceGroup | None:
        return None if self.layout.sp == 1 else SequenceGroup(self.sp_group, self.sp_rank, self.layout.sp)

    def sp_src(self) -> int:
        """Global rank of this process's sp-group rank 0 (encodes the text its group uses)."""
        return self.cfg_rank * self.layout.sp


def build_mesh(layout: Layout) -> Mesh:
    """Create the groups (every process calls this, in the same order) after init_process_group."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != layout.world:
        raise NewbieError(f"--parallel {layout} needs {layout.world} processes, this group has {world}")
    sp, cfg = layout.sp, layout.cfg
    sp_group = cfg_group = None
    if sp > 1:
        for c in range(cfg):  # new_group is collective: every process creates every group
            g = dist.new_group([c * sp + s for s in range(sp)])
            if rank // sp == c:
                sp_group = g
    if cfg > 1:
        for s in range(sp):
            g = dist.new_group([c * sp + s for c in range(cfg)])
            if rank % sp == s:
                cfg_group = g
    return Mesh(layout, rank, cfg_group, sp_group)
