"""Image agreement metrics against the fp32 reference: PSNR, SSIM and the largest per-pixel error.

Images are compared as 8-bit RGB (what the user saves), in units of 0..255.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
# SSIM constants of Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def as_array(image) -> np.ndarray:
    """PIL image or (H, W, 3) array -> float64 (H, W, 3) in 0..255."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_array(a), as_array(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB; inf for identical images."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(DATA_RANGE**2 / mse)


def max_abs_error(a, b) -> float:
    """The largest difference of any pixel channel, 0..255."""
    a, b = _pair(a, b)
    return float(np.abs(a - b).max())


def abs_difference(a, b) -> np.ndarray:
    """Per-pixel error (H, W): the largest channel difference, 0..255."""
    a, b = _pair(a, b)
    return np.abs(a - b).max(axis=-1)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(a, b) -> float:
    """Mean SSIM over the image and its channels (Gaussian window; only windows that fit inside the image,
    as skimage's structural_similarity(gaussian_weights=True, use_sample_covariance=False) averages)."""
    a, b = _pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} for SSIM, got {a.shape[:2]}")
    x = torch.from_numpy(a).permute(2, 0, 1)[:, None]  # (C, 1, H, W): each channel on its own
    y = torch.from_numpy(b).permute(2, 0, 1)[:, None]
    w = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean())
