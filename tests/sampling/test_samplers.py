import math

import pytest
import torch

from newbie.sampling.samplers import SAMPLERS, dpmpp_2m, euler, midpoint
from newbie.sampling.schedules import flow_sigmas, shift_sigmas


def test_schedule_is_monotone_from_one_to_zero_and_shifted():
    s = flow_sigmas(18, 6.0)
    assert len(s) == 19 and s[0] == 1.0 and s[-1] == 0.0
    assert bool((s[1:] < s[:-1]).all())
    # official t' = t / (t + s - s t) at t = 0.5 -> 1/7, sigma' = 6/7
    assert shift_sigmas(torch.tensor([0.5], dtype=torch.float64), 6.0).item() == pytest.approx(6 / 7)
    assert torch.equal(flow_sigmas(4, 1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        flow_sigmas(0, 6.0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_straight_line_flow_lands_exactly_on_data(name):
    # The ideal velocity of a single data point: d = noise - data is constant along the path.
    data = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    noise = torch.randn_like(data)
    model = lambda x, sigma: (x - data) / sigma if sigma > 0 else noise - data  # noqa: E731
    out = SAMPLERS[name](model, noise.clone(), flow_sigmas(7, 6.0))
    torch.testing.assert_close(out, data, rtol=1e-10, atol=1e-10)


def test_euler_and_midpoint_orders_on_a_curved_field():
    # dx/dsigma = x  ->  x(0) = x(1) * exp(-1)
    model = lambda x, sigma: x  # noqa: E731
    x1 = torch.ones(1, dtype=torch.float64)
    exact = math.exp(-1)
    err = {}
    for name, fn in (("euler", euler), ("midpoint", midpoint)):
        err[name] = [abs(fn(model, x1.clone(), flow_sigmas(n, 1.0)).item() - exact) for n in (10, 20)]
    assert err["euler"][0] / err["euler"][1] == pytest.approx(2, rel=0.1)  # first order
    assert err["midpoint"][0] / err["midpoint"][1] == pytest.approx(4, rel=0.1)  # second order


def test_dpmpp_2m_is_second_order_on_a_gaussian_target():
    # Data ~ N(0, s^2), x_sigma ~ N(0, (1-sigma)^2 s^2 + sigma^2): exact velocity is linear in x.
    s2 = 0.25

    def model(x, sigma):
        var = (1 - sigma) ** 2 * s2 + sigma**2
        denoised = x * (1 - sigma) * s2 / var
        return (x - denoised) / sigma

    noise = torch.tensor([1.3], dtype=torch.float64)
    exact = noise.item() * math.sqrt(s2)  # the ODE maps the noise quantile to the data quantile
    errs = [abs(dpmpp_2m(model, noise.clone(), flow_sigmas(n, 3.0)).item() - exact) for n in (8, 16, 32)]
    assert errs[2] < errs[1] < errs[0]
    assert errs[1] / errs[2] > 3.0


def test_callback_reports_every_step():
    seen = []
    euler(lambda x, s: x, torch.ones(1), flow_sigmas(5, 6.0), callback=lambda d: seen.append(d["step"]))
    assert seen == [1, 2, 3, 4, 5]
