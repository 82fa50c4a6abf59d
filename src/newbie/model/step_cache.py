"""First-block cache: reuse the residual of the deep layers when consecutive steps barely change.

At each call the first joint layer always runs. If its residual moved less than `threshold` (relative L1)
since the last fully computed step, the other layers are skipped and their last residual is added instead.
One cache per CFG branch and per request; off by default (it trades exactness for speed).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class StepCache:
    threshold: float
    prev_first: Tensor | None = None  # first-layer residual at the last fully computed step
    rest: Tensor | None = None  # (output of the last layer) - (output of the first layer) at that step
    calls: int = 0
    hits: int = 0

    def usable(self, first_residual: Tensor) -> bool:
        if self.prev_first is None or self.prev_first.shape != first_residual.shape:
            return False
        change = (first_residual - self.prev_first).abs().mean() / self.prev_first.abs().mean().clamp(
            min=1e-12
        )
        return float(change) < self.threshold  # one host sync per step, only when caching is on
