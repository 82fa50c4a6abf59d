"""The step cache policies decide skips as documented; a threshold of 0 never skips."""

import pytest
import torch

from newbie.model.step_cache import AUTO, StepCache, StepPolicy, parse_step_cache


def _drive(cache: StepCache, probes: list[torch.Tensor]) -> list[bool]:
    """The DiT's use of a cache: count the call, ask, and store after a full call."""
    skips = []
    for p in probes:
        cache.calls += 1
        skip = cache.usable(p)
        cache.hits += skip
        if not skip:
            cache.store(p, torch.zeros_like(p))
        skips.append(skip)
    return skips


def _probes(n: int, step: float) -> list[torch.Tensor]:
    base = torch.rand(4, 8) + 1.0  # mean |x| about 1.5: a relative step of about step / 1.5
    return [base + k * step for k in range(n)]


def test_plain_threshold_compares_with_the_last_full_step():
    skips = _drive(StepCache.of(0.05), _probes(6, 0.03))
    # each 0.02 change is under 0.05 until the drift from the last full step passes it
    assert skips == [False, True, True, False, True, True]


def test_zero_threshold_never_skips():
    for setting in (StepPolicy(0.0), StepPolicy(0.0, warmup=1, max_skips=2, accumulate=True)):
        cache = StepCache.of(setting)
        assert not any(_drive(cache, _probes(8, 0.0)))  # identical probes: still no skip
        assert cache.hits == 0 and cache.calls == 8


def test_warmup_and_consecutive_cap():
    cache = StepCache.of(StepPolicy(10.0, warmup=3, max_skips=2))
    assert _drive(cache, _probes(9, 0.01)) == [False] * 3 + [True, True, False, True, True, False]


def test_accumulated_drift_sums_step_changes():
    # step-to-step changes of about 0.013 each: the sum passes 0.03 on the third, then restarts
    cache = StepCache.of(StepPolicy(0.03, accumulate=True))
    base = _probes(1, 0.0)[0]
    probes = [base * (1 + 0.013 * k) for k in range(8)]
    assert _drive(cache, probes) == [False, True, True, False, True, True, False, True]


def test_parse_step_cache():
    assert parse_step_cache("0.05") == 0.05
    assert parse_step_cache("0") == 0.0
    assert parse_step_cache("AUTO") is AUTO
    for bad in ("fast", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="--step-cache"):
            parse_step_cache(bad)
