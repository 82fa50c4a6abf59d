import math

import numpy as np
import pytest

from newbie.bench import metrics


def _img(value, shape=(32, 32, 3)):
    return np.full(shape, value, dtype=np.float64)


def _naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Window by window, as in Wang et al. (2004): Gaussian-weighted means, variances and covariance."""
    size, sigma = 11, 1.5
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[2]):
        for i in range(a.shape[0] - size + 1):
            for j in range(a.shape[1] - size + 1):
                x, y = a[i : i + size, j : j + size, ch], b[i : i + size, j : j + size, ch]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
                cxy = (w * x * y).sum() - mx * my
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("offset", [1, 5, 64])
def test_psnr_of_a_constant_offset(offset):
    # MSE = offset^2, so PSNR = 20 log10(255 / offset): 48.13 dB for 1
    assert metrics.psnr(_img(100), _img(100 + offset)) == pytest.approx(20 * math.log10(255 / offset))


def test_psnr_known_value_and_identical():
    assert metrics.psnr(_img(0), _img(1)) == pytest.approx(48.1308036, abs=1e-6)
    assert metrics.psnr(_img(7), _img(7)) == math.inf


def test_psnr_accepts_pil_images():
    from PIL import Image

    a = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    b = Image.fromarray(np.full((16, 16, 3), 10, np.uint8))
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(25.5))


def test_max_abs_error_and_difference_map():
    a, b = _img(10), _img(10)
    b[3, 4, 1] = 250
    assert metrics.max_abs_error(a, b) == 240
    d = metrics.abs_difference(a, b)
    assert d.shape == (32, 32) and d[3, 4] == 240 and d.sum() == 240


def test_ssim_identical_is_one():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 24, 3)).astype(np.float64)
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_ssim_of_constant_images_has_the_closed_form():
    # sigma = 0 everywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 50.0, 200.0
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(_img(a), _img(b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_ssim_matches_a_window_by_window_reference():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (18, 20, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert metrics.ssim(a, b) == pytest.approx(_naive_ssim(a, b), abs=1e-9)
    assert metrics.ssim(a, 255 - a) < 0  # inverted structure: negative correlation


def test_metrics_reject_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(_img(0, (8, 8, 3)), _img(0, (8, 9, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(_img(0, (8, 8, 3)), _img(0, (8, 8, 3)))
