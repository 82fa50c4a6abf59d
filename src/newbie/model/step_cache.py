"""Step caches: reuse the residual of the deep layers when consecutive steps barely change.

At each call the first joint layer always runs; its residual (output - input) is the probe. A policy decides
from it whether the other layers run or their last residual is added instead:
- first-block cache (a plain threshold, `--step-cache 0.05`): skip while the probe moved less than
  `threshold` (relative L1) since the last fully computed step.
- accumulated (TeaCache-like, on the first block's residual rather than the modulated input): sum the
  step-to-step relative L1 changes since the last full step and skip while the sum stays under `threshold`;
  the sum grows with every skipped step, so a slow drift forces a full step where the plain test would not.
Both take a warm-up of full calls (the first steps lay down the composition and change fastest; a reused
residual there shows in the final image) and a cap on consecutive skips (the reused residual goes stale
whatever the probe says). Two refinements after cache-dit's DBCache and TaylorSeer:
- `last` (DBCache's Bn): the last joint layers run on every call, also a skipped one, so only the middle's
  residual is reused and the last layers correct it from this step's own first-layer output.
- `order=1` (TaylorSeer, first order): the reused residual is extrapolated linearly from the last two full
  calls, in the model's time (the DiT sets `now`; call counts without it), instead of held constant since
  the last one. In time, not calls: a shifted schedule's steps are far from evenly spaced.
`auto` is the setting measured best on the demo model (bench/step_cache_policies.py).
One cache per CFG branch and per request; off by default (it trades exactness for speed).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepPolicy:
    """When to skip the deep layers. `warmup` and `max_skips` count calls of one branch (0 = none / no cap)."""

    threshold: float
    warmup: int = 0
    max_skips: int = 0
    accumulate: bool = False
    last: int = 0  # joint layers at the end that run on every call (0: a hit skips all but the first)
    order: int = 0  # 1: extrapolate the reused residual from the last two full calls; 0: reuse it as is
    name: str = ""


# Chosen by bench/step_cache_policies.py on the demo model (CPU, 20 Euler steps, CFG 4): the plain first-block
# test at 0.15 ran 65 of 160 calls in full (76.9 call equivalents with the probe layer: 2.08x fewer) at 52.4 dB,
# binding as without a cache; warm-up + a skip cap of 2 spent 72 for 45 dB, `last=1` 88.8 equivalents for 55.9
# dB, first order 88.2 for 44.7 dB (34.5 dB at 2x). On a random-weight DiT first order wins (+15.6 dB at the
# same calls), but random weights say nothing of a picture. See docs/benchmarks.md.
AUTO = StepPolicy(threshold=0.15, name="auto")


def parse_step_cache(text: str) -> float | StepPolicy:
    """--step-cache's value: a first-block threshold (0 = off) or `auto`. Raises ValueError on anything else."""
    if text.strip().lower() == "auto":
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--step-cache takes a threshold such as 0.05 or 'auto', not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"--step-cache threshold must be a finite number >= 0, got {text!r}")
    return value


def relative_l1(x: Tensor, ref: Tensor) -> Tensor:
    return (x - ref).abs().mean() / ref.abs().mean().clamp(min=1e-12)


@dataclass
class StepCache:
    threshold: float
    warmup: int = 0
    max_skips: int = 0
    accumulate: bool = False
    last: int = 0
    order: int = 0
    prev_first: Tensor | None = None  # first-layer residual at the last fully computed step
    rest: Tensor | None = None  # (output of the last layer) - (output of the first layer) at that step
    last_first: Tensor | None = None  # first-layer residual at the previous call (accumulate only)
    drift: float = 0.0  # accumulated change since the last full step (accumulate only)
    older: Tensor | None = None  # `rest` of the full call before (order 1 only)
    rest_at: tuple[Tensor, Tensor] | None = None  # the times of `older` and `rest`
    now: Tensor | None = None  # (B,) model time of this call, set by the DiT (order 1 only)
    in_row: int = 0  # consecutive skipped calls
    calls: int = 0
    hits: int = 0

    @classmethod
    def of(cls, setting: float | StepPolicy) -> StepCache:
        """A fresh cache for one branch of one request, from a threshold or a policy."""
        if isinstance(setting, StepPolicy):
            return cls(**{f.name: getattr(setting, f.name) for f in fields(setting) if f.name != "name"})
        return cls(float(setting))

    def reference(self, first_residual: Tensor) -> Tensor | None:
        """What the probe is compared with, or None when this call must run in full (no comparison needed).
        Called after `calls` counts this call; the same answer on every rank of a sequence-parallel group."""
        if self.prev_first is None or self.prev_first.shape != first_residual.shape:
            return None
        if self.calls <= self.warmup or (self.max_skips and self.in_row >= self.max_skips):
            return None
        return self.last_first if self.accumulate else self.prev_first

    def decide(self, first_residual: Tensor, change: float | None) -> bool:
        """Skip (True) or run in full (False), given the probe's relative change against `reference`."""
        if self.accumulate:
            self.last_first = first_residual
        if change is None:
            return False
        measure = self.drift + change if self.accumulate else change
        if measure >= self.threshold:
            return False
        self.drift, self.in_row = measure, self.in_row + 1
        return True

    def usable(self, first_residual: Tensor) -> bool:
        ref = self.reference(first_residual)
        # one host sync per step, only when caching is on and the policy allows a skip
        return self.decide(first_residual, None if ref is None else float(relative_l1(first_residual, ref)))

    def store(self, first_residual: Tensor, rest: Tensor) -> None:
        """After a full call: the new reference and the deep layers' residual to reuse."""
        if self.order:
            at = self._clock()
            if self.rest is not None and self.rest.shape == rest.shape:
                self.older, self.rest_at = self.rest, (self.rest_at[1], at)
            else:
                self.older, self.rest_at = None, (at, at)
        self.prev_first, self.rest = first_residual, rest
        self.drift, self.in_row = 0.0, 0

    def _clock(self) -> Tensor:
        # a tensor, so that extrapolating costs no host sync; per sample, to broadcast over (B, N, D)
        if self.now is None:
            return torch.tensor(float(self.calls))
        return self.now.detach().float().reshape(-1, 1, 1)

    def reused(self) -> Tensor:
        """The residual a skipped call adds: the last full call's, or its linear extrapolation to this call
        (first-order TaylorSeer: the residual's rate of change between the last two full calls)."""
        if self.older is None:
            return self.rest
        (a, b), k = self.rest_at, self._clock()
        gap = b - a
        rate = torch.where(gap.abs() > 1e-9, (k - b) / torch.where(gap == 0, 1.0, gap), 0.0)
        return self.rest + (self.rest - self.older) * rate.to(self.rest.device, self.rest.dtype)
