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


def test_first_order_extrapolates_the_reused_residual():
    # full calls 1 and 3 store residuals r and r + 2d; a skip at call 4 adds r + 3d (one call further on)
    cache = StepCache.of(StepPolicy(10.0, max_skips=1, order=1))
    r, d = torch.rand(2, 3), torch.rand(2, 3)
    p = torch.ones(2, 3)
    for k, rest in ((1, r), (3, r + 2 * d)):
        cache.calls = k
        cache.store(p, rest)
    cache.calls = 4
    assert torch.allclose(cache.reused(), r + 3 * d)
    # order 0 (and order 1 after a single full call) reuses the last residual as it is
    plain = StepCache.of(StepPolicy(10.0, order=0))
    plain.calls = 1
    plain.store(p, r)
    plain.calls = 2
    plain.store(p, r + d)
    plain.calls = 5
    assert torch.equal(plain.reused(), r + d)
    once = StepCache.of(StepPolicy(10.0, order=1))
    once.calls = 1
    once.store(p, r)
    once.calls = 3
    assert torch.equal(once.reused(), r)


def _tiny_dit(n_layers: int):
    from newbie.demo.tiny import tiny_dit_config
    from newbie.model.dit import NextDiT

    torch.manual_seed(0)
    dit = NextDiT(tiny_dit_config(n_layers=n_layers)).eval()
    for p in dit.parameters():
        p.data.add_(0.05 * torch.randn_like(p))  # non-zero gates: every layer changes its input
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 8, 8, generator=g)
    cap = torch.randn(1, 5, dit.cfg.cap_feat_dim, generator=g)
    pooled = torch.randn(1, dit.cfg.clip_text_dim, generator=g)
    return dit, x, cap, pooled


@torch.no_grad()
def test_last_layers_run_on_a_skipped_call():
    dit, x, cap, pooled = _tiny_dit(4)
    t0, t1 = torch.tensor([0.3]), torch.tensor([0.35])
    # every layer but the first always runs: nothing is reused, so a "skip" is the exact forward
    cache = StepCache.of(StepPolicy(10.0, last=3))
    for t in (t0, t1):
        assert torch.equal(dit(x, t, cap, None, pooled, cache=cache), dit(x, t, cap, None, pooled))
    assert cache.hits == 1
    # last=1: a skip reuses layers 1-2's residual and runs layer 3 on it, which a plain skip does not
    outs = {}
    for last in (0, 1):
        cache = StepCache.of(StepPolicy(10.0, last=last))
        dit(x, t0, cap, None, pooled, cache=cache)
        outs[last] = dit(x, t1, cap, None, pooled, cache=cache)
        assert cache.hits == 1
    exact = dit(x, t1, cap, None, pooled)
    assert not torch.equal(outs[0], outs[1])
    assert (outs[1] - exact).norm() < (outs[0] - exact).norm()  # the last layer sees this step's time


def test_first_order_extrapolates_in_model_time_when_given():
    # full calls at t = 0.1 and 0.4 (unevenly spaced, as a shifted schedule's), a skip at t = 0.5:
    # r + d * (0.5 - 0.4) / (0.4 - 0.1), per sample
    cache = StepCache.of(StepPolicy(10.0, order=1))
    r, d, p = torch.rand(2, 3, 4), torch.rand(2, 3, 4), torch.ones(2, 3, 4)
    for k, (t, rest) in enumerate(((0.1, r), (0.4, r + d)), start=1):
        cache.calls, cache.now = k, torch.full((2,), t)
        cache.store(p, rest)
    cache.calls, cache.now = 3, torch.tensor([0.5, 0.7])
    expected = r + d + d * (torch.tensor([0.1, 0.3]) / 0.3).view(2, 1, 1)
    assert torch.allclose(cache.reused(), expected, atol=1e-6)
