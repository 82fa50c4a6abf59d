"""ODE samplers over a sigma grid. `model(x, sigma)` returns the velocity dx/dsigma (= noise - data).

Each sampler: (model, x, sigmas, callback) -> x at sigmas[-1]. `sigmas` is a 1-D float64 CPU tensor,
so step-size logic runs on the host without device syncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, float], Tensor]
Callback = Callable[[dict], None] | None


def _report(callback: Callback, i: int, n: int, x: Tensor, sigma: float, denoised: Tensor | None):
    if callback is not None:
        callback({"step": i + 1, "steps": n, "x": x, "sigma": sigma, "denoised": denoised})


@torch.no_grad()
def euler(model: ModelFn, x: Tensor, sigmas: Tensor, callback: Callback = None) -> Tensor:
    """Euler's method on the flow ODE (1 model call per step)."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        d = model(x, s[i])
        x = x + (s[i + 1] - s[i]) * d
        _report(callback, i, len(s) - 1, x, s[i + 1], x - s[i + 1] * d)
    return x


@torch.no_grad()
def midpoint(model: ModelFn, x: Tensor, sigmas: Tensor, callback: Callback = None) -> Tensor:
    """Explicit midpoint (RK2), as torchdiffeq's fixed-grid 'midpoint' in the official sampler (2 calls per step)."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        h = s[i + 1] - s[i]
        d1 = model(x, s[i])
        d2 = model(x + 0.5 * h * d1, s[i] + 0.5 * h)
        x = x + h * d2
        _report(callback, i, len(s) - 1, x, s[i + 1], x - s[i + 1] * d2)
    return x


def _log_snr(sigma: float) -> float:
    # lambda = log(alpha / sigma) with alpha = 1 - sigma; -inf at pure noise, +inf at data.
    if sigma <= 0:
        return math.inf
    if sigma >= 1:
        return -math.inf
    return math.log((1 - sigma) / sigma)


@torch.no_grad()
def dpmpp_2m(model: ModelFn, x: Tensor, sigmas: Tensor, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M), multistep second order in data prediction (Lu et al. 2022), for flow matching."""
    s = sigmas.tolist()
    prev_denoised, h_prev = None, None
    for i in range(len(s) - 1):
        sig, sig_next = s[i], s[i + 1]
        d = model(x, sig)
        denoised = x - sig * d
        lam, lam_next = _log_snr(sig), _log_snr(sig_next)
        h = lam_next - lam
        if sig_next == 0:
            x = denoised  # last step lands on the data prediction
        else:
            # ratio form of exp(-h) = sigma_next*alpha / (sigma*alpha_next): finite even when sigma = 1.
            alpha_next = 1 - sig_next
            ratio = (sig_next / sig) if sig > 0 else 0.0
            coef = alpha_next - ratio * (1 - sig)  # alpha_next * (1 - exp(-h))
            use = denoised
            if prev_denoised is not None and math.isfinite(h_prev) and math.isfinite(h) and h > 0:
                r = h_prev / h
                use = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * prev_denoised
            x = ratio * x + coef * use
        prev_denoised, h_prev = denoised, h
        _report(callback, i, len(s) - 1, x, sig_next, denoised)
    return x


@torch.no_grad()
def res_multistep(model: ModelFn, x: Tensor, sigmas: Tensor, callback: Callback = None) -> Tensor:
    """ComfyUI's `res_multistep` (the NewBie template's sampler): the second-order multistep exponential
    integrator of RES (Zhang et al. 2023, arXiv 2308.02157) on dx/dt = D(x, t) - x with t = -log(sigma)
    (sigma itself, not the flow log-SNR, as ComfyUI does for every model). 1 model call per step.

    Per step h = t_next - t. The first step and the last (sigma_next = 0) are Euler steps; the others use the
    previous data prediction too: x' = e^-h x + h (b1 D + b2 D_prev), c2 = (t_prev - t) / h (negative),
    b1 = phi1(-h) - phi2(-h) / c2, b2 = phi2(-h) / c2, phi1(z) = (e^z - 1) / z, phi2(z) = (phi1(z) - 1) / z.
    This is exact when D is linear in t (tests/sampling/test_samplers.py checks that against the ODE)."""
    s = sigmas.tolist()
    prev_denoised, h_prev = None, None
    for i in range(len(s) - 1):
        sig, sig_next = s[i], s[i + 1]
        d = model(x, sig)
        denoised = x - sig * d
        h = math.log(sig / sig_next) if sig > 0 and sig_next > 0 else math.inf
        if prev_denoised is None or sig_next == 0 or not (h > 0 and h_prev > 0 and math.isfinite(h)):
            x = x + (sig_next - sig) * d  # Euler; lands on `denoised` when sig_next = 0
        else:
            c2 = -h_prev / h
            phi1 = -math.expm1(-h) / h  # phi1(-h), written with expm1 so it stays accurate for small h
            phi2 = (1.0 - phi1) / h  # phi2(-h)
            b1, b2 = phi1 - phi2 / c2, phi2 / c2
            x = (sig_next / sig) * x + h * (b1 * denoised + b2 * prev_denoised)  # e^-h = sig_next / sig
        prev_denoised, h_prev = denoised, h
        _report(callback, i, len(s) - 1, x, sig_next, denoised)
    return x


SAMPLERS: dict[str, Callable] = {
    "euler": euler,
    "midpoint": midpoint,
    "dpmpp_2m": dpmpp_2m,
    "res_multistep": res_multistep,
}
