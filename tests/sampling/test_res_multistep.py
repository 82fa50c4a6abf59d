"""ComfyUI's res_multistep against its update rule and against the ODE it integrates; ComfyUI's `simple`
scheduler against its definition over ModelSamplingDiscreteFlow's sigma table."""

import math

import pytest
import torch

from newbie.sampling.samplers import SAMPLERS, euler, res_multistep
from newbie.sampling.schedules import (
    comfy_sigma_table,
    flow_sigmas,
    schedule_sigmas,
    simple_img2img_sigmas,
    simple_sigmas,
)


def _linear_in_t_model(a, b):
    """D(x, sigma) = a + b * t with t = -log(sigma), independent of x; as a flow velocity (x - D) / sigma."""
    return lambda x, sigma: (x - (a + b * -math.log(sigma))) / sigma


def _exact(x_start, t0, t1, a, b):
    """dx/dt = D(t) - x from t0 to t1 for D = a + b t: x e^-h + a (1 - e^-h) + b (t1 - 1 - (t0 - 1) e^-h)."""
    e = math.exp(-(t1 - t0))
    return x_start * e + a * (1 - e) + b * (t1 - 1 - (t0 - 1) * e)


def test_second_order_steps_are_exact_for_a_data_prediction_linear_in_log_sigma():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    x0 = torch.randn(3, 4, dtype=torch.float64)
    sigmas = flow_sigmas(12, 6.0)[:-1]  # stop short of 0: the last level of a real grid is an Euler step
    model = _linear_in_t_model(a, b)
    t = [-math.log(s) for s in sigmas.tolist()]
    # the first step is Euler (D held at its start value): exact for that constant D
    x1 = _exact(x0, t[0], t[1], a + b * t[0], torch.zeros_like(b))
    torch.testing.assert_close(res_multistep(model, x0.clone(), sigmas[:2]), x1, rtol=1e-12, atol=1e-12)
    # every later step uses D and the previous D: the linear part of D is integrated exactly
    out = res_multistep(model, x0.clone(), sigmas)
    torch.testing.assert_close(out, _exact(x1, t[1], t[-1], a, b), rtol=1e-10, atol=1e-10)
    # Euler is not exact for the same field (so the check above can fail)
    assert (euler(model, x0.clone(), sigmas) - _exact(x1, t[1], t[-1], a, b)).abs().max() > 1e-3


def test_one_step_matches_the_published_coefficients():
    # RES second-order multistep (arXiv 2308.02157) as ComfyUI states it, in tensors: h = t_next - t,
    # c2 = (t_prev - t) / h, b1 = phi1(-h) - phi2(-h) / c2, b2 = phi2(-h) / c2,
    # x' = e^-h x + h (b1 D + b2 D_prev).
    torch.manual_seed(1)
    d_prev, d_now, x = (torch.randn(5, dtype=torch.float64) for _ in range(3))
    s_prev, s, s_next = 0.9, 0.7, 0.45
    calls = iter([(x, d_prev), (x, d_now)])

    def model(xx, sigma):  # step 0 returns D_prev at s_prev; step 1 returns D_now at s
        _, d = next(calls)
        return (xx - d) / sigma

    got = res_multistep(model, x.clone(), torch.tensor([s_prev, s, s_next], dtype=torch.float64))
    x_mid = x * (s / s_prev) + d_prev * (1 - s / s_prev)  # the first (Euler) step
    tt = lambda v: -torch.tensor(v, dtype=torch.float64).log()  # noqa: E731
    h = tt(s_next) - tt(s)
    c2 = (tt(s_prev) - tt(s)) / h
    phi1 = lambda z: torch.expm1(z) / z  # noqa: E731
    phi2 = lambda z: (phi1(z) - 1) / z  # noqa: E731
    b1, b2 = phi1(-h) - phi2(-h) / c2, phi2(-h) / c2
    want = torch.exp(-h) * x_mid + h * (b1 * d_now + b2 * d_prev)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_last_step_lands_on_the_data_prediction_and_reports_every_step():
    data = torch.randn(2, 3, dtype=torch.float64)
    seen = []
    out = res_multistep(
        lambda x, s: (x - data) / s,
        torch.randn(2, 3, dtype=torch.float64),
        flow_sigmas(5, 6.0),
        callback=seen.append,
    )
    torch.testing.assert_close(out, data, rtol=1e-12, atol=1e-12)
    assert [i["step"] for i in seen] == [1, 2, 3, 4, 5] and "res_multistep" in SAMPLERS


def test_simple_schedule_picks_comfyui_table_entries():
    # ModelSamplingDiscreteFlow: sigma(k / 1000), k = 1..1000, float32;
    # simple: entry -(1 + int(i * 1000 / steps))
    table = comfy_sigma_table(6.0)
    assert table.dtype == torch.float32 and len(table) == 1000 and table[-1] == 1.0
    k = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(table.double(), 6 * k / (1 + 5 * k), rtol=1e-6, atol=1e-7)
    for steps in (20, 18, 7):
        s = simple_sigmas(steps, 6.0)
        idx = [int(i * (1000 / steps)) for i in range(steps)]
        assert s.tolist() == [table[-(1 + j)].item() for j in idx] + [0.0]
    # 20 steps divide 1000: the same levels as our uniform grid up to float32 rounding
    torch.testing.assert_close(simple_sigmas(20, 6.0), flow_sigmas(20, 6.0), rtol=1e-6, atol=1e-7)
    # 18 do not: the second level is sigma(0.945), not sigma(1 - 1/18)
    assert simple_sigmas(18, 6.0)[1].item() == pytest.approx(6 * 0.945 / (1 + 5 * 0.945), abs=1e-7)
    assert abs(simple_sigmas(18, 6.0)[1].item() - flow_sigmas(18, 6.0)[1].item()) > 1e-4


def test_simple_img2img_is_comfyui_denoise_rule():
    # KSampler with denoise d: the last steps + 1 levels of a grid of int(steps / d) steps
    assert simple_img2img_sigmas(10, 6.0, 0.5).tolist() == simple_sigmas(20, 6.0)[-11:].tolist()
    assert torch.equal(schedule_sigmas("simple", 8, 3.0), simple_sigmas(8, 3.0))
    assert torch.equal(schedule_sigmas("uniform", 8, 3.0), flow_sigmas(8, 3.0))
    with pytest.raises(ValueError):
        schedule_sigmas("karras", 8, 3.0)
