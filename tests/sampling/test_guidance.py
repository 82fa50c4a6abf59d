import torch

from newbie.sampling.guidance import guided


def _pair(cond, uncond):
    calls = []

    def pair(x, sigma):
        calls.append(("pair", sigma))
        return torch.cat([cond, uncond])

    def single(x, sigma):
        calls.append(("cond", sigma))
        return cond

    return pair, single, calls


def test_cfg_formula_and_truncation():
    cond, uncond = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    pair, single, calls = _pair(cond, uncond)
    model = guided(pair, single, scale=5.0, cfg_trunc=0.25)
    x = torch.zeros(3, 4, 2, 2)
    # sigma 0.9 -> t 0.1 < 0.25: guided; sigma 0.5 -> t 0.5: conditional branch only
    torch.testing.assert_close(model(x, 0.9), uncond + 5.0 * (cond - uncond))
    torch.testing.assert_close(model(x, 0.5), cond)
    assert calls == [("pair", 0.9), ("cond", 0.5)]


def test_scale_one_never_runs_the_unconditional_branch():
    cond, uncond = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    pair, single, calls = _pair(cond, uncond)
    guided(pair, single, scale=1.0)(torch.zeros(2, 4, 2, 2), 0.99)
    assert calls == [("cond", 0.99)]


def test_renorm_is_per_sample_at_batch_above_one():
    cond = torch.ones(2, 4, 2, 2)
    uncond = torch.ones(2, 4, 2, 2)
    uncond[1] = -1.0  # only sample 1 gets a large guided norm
    pair, single, _ = _pair(cond, uncond)
    out = guided(pair, single, scale=3.0, renorm=1.0)(torch.zeros(2, 4, 2, 2), 0.99)
    torch.testing.assert_close(out[0], cond[0])  # sample 0: guided == cond, norm not above the cap, unchanged
    assert torch.allclose(out[1].norm(), cond[1].norm())  # sample 1: scaled down to ||cond||
    raw = uncond[1] + 3.0 * (cond[1] - uncond[1])
    torch.testing.assert_close(out[1] / out[1].norm(), raw / raw.norm())
