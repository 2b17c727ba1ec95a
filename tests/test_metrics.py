import math

import numpy as np
import pytest

from dcomp import metrics
from dcomp.metrics import (
    bd_psnr,
    bd_rate,
    bits_per_pixel,
    bits_per_subpixel,
    ms_ssim,
    ms_ssim_scales_for,
    psnr,
    ssim,
    window_size_for,
)


def _textured(h: int, w: int, c: int | None = 3, seed: int = 0) -> np.ndarray:
    """Smooth waves, an edge and mild noise, kept inside 20..235 so +-small shifts do not clip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(float)
    planes = [128 + 60 * np.sin(x / 5 + k) * np.cos(y / 7 - k) + 25 * (x > w / 2) for k in range(c or 1)]
    img = np.stack(planes, axis=2) + rng.normal(0, 6, (h, w, c or 1))
    img = np.clip(img, 20, 235).astype(np.uint8)
    return img[:, :, 0].copy() if c is None else img


def _noisy(img: np.ndarray, sd: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sd, img.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- slow reference SSIM

def _ref_ssim_cs(a: np.ndarray, b: np.ndarray, win: int = 11) -> tuple[float, float]:
    """Textbook SSIM on one 2-D channel: explicit 2-D Gaussian window at every 'valid' position."""
    r = np.arange(win) - (win - 1) / 2
    g1 = np.exp(-r**2 / (2 * 1.5**2))
    w2 = np.outer(g1, g1)
    w2 /= w2.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ss, css = [], []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i:i + win, j:j + win], b[i:i + win, j:j + win]
            ma, mb = (w2 * pa).sum(), (w2 * pb).sum()
            va = (w2 * (pa - ma) ** 2).sum()
            vb = (w2 * (pb - mb) ** 2).sum()
            cov = (w2 * (pa - ma) * (pb - mb)).sum()
            cs = (2 * cov + c2) / (va + vb + c2)
            css.append(cs)
            ss.append((2 * ma * mb + c1) / (ma**2 + mb**2 + c1) * cs)
    return float(np.mean(ss)), float(np.mean(css))


def _ref_ssim(a: np.ndarray, b: np.ndarray, win: int = 11) -> float:
    if a.ndim == 2:
        return _ref_ssim_cs(a, b, win)[0]
    return float(np.mean([_ref_ssim_cs(a[:, :, k], b[:, :, k], win)[0] for k in range(a.shape[2])]))


# ---------------------------------------------------------------- PSNR

@pytest.mark.parametrize("channels", [None, 1, 3])
def test_psnr_of_known_mse(channels):
    a = _textured(20, 30, channels)
    b = a + np.uint8(5)  # values <= 235: no wrap-around, every sample off by exactly 5
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    assert psnr(b, a) == psnr(a, b)
    assert psnr(a, b, peak=1.0) == pytest.approx(10 * math.log10(1 / 25), abs=1e-12)


def test_psnr_mse_is_over_all_samples_together():
    a = _textured(16, 16, 3)
    b = a.copy()
    b[:, :, 0] += 6  # only red off: MSE = 36 / 3 = 12 over all samples
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 12), abs=1e-12)


def test_psnr_identical_is_inf_and_shape_mismatch_raises():
    a = _textured(8, 8)
    assert psnr(a, a.copy()) == math.inf
    with pytest.raises(ValueError):
        psnr(a, a[:, :4])


def test_bits_helpers():
    assert bits_per_pixel(1000, 100, 80) == pytest.approx(1.0)
    assert bits_per_subpixel(3000, 100, 80, 3) == pytest.approx(1.0)


# ---------------------------------------------------------------- SSIM

def test_ssim_identical_is_one():
    a = _textured(40, 50)
    assert abs(ssim(a, a.copy()) - 1.0) < 1e-12


def test_ssim_matches_slow_reference_rgb_24x24():
    a = _textured(24, 24, 3, seed=2)
    b = _noisy(a, 12)
    ref = _ref_ssim(a, b)
    assert 0.2 < ref < 0.98  # a meaningful, not degenerate, comparison
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)


def test_ssim_matches_slow_reference_gray_non_square():
    a = _textured(23, 30, None, seed=3)
    b = _noisy(a, 20, seed=4)
    assert ssim(a, b) == pytest.approx(_ref_ssim(a, b), abs=1e-10)


def test_ssim_rgb_is_channel_mean_and_2d_equals_one_channel():
    a = _textured(30, 30, 3)
    b = _noisy(a, 15)
    per_channel = [ssim(a[:, :, k], b[:, :, k]) for k in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert ssim(a[:, :, 1], b[:, :, 1]) == pytest.approx(ssim(a[:, :, 1:2], b[:, :, 1:2]), abs=1e-12)


def test_ssim_decreases_with_noise():
    a = _textured(48, 48)
    values = [ssim(a, _noisy(a, sd)) for sd in (2, 10, 30)]
    assert values[0] > values[1] > values[2]
    assert values[0] < 1.0


def test_ssim_symmetric():
    a = _textured(32, 40)
    b = _noisy(a, 10)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)


def test_ssim_constant_shift_below_one():
    a = _textured(32, 32)
    s = ssim(a, a + np.uint8(20))  # structure intact, luminance off
    assert 0.9 < s < 1.0


def test_ssim_small_images_shrink_the_window():
    assert window_size_for(32, 32) == 11  # CIFAR: full window
    assert window_size_for(8, 8) == 7
    assert window_size_for(12, 9) == 9
    assert window_size_for(10, 40) == 9
    assert window_size_for(2, 5) == 1
    a = _textured(8, 8, 3, seed=5)
    b = _noisy(a, 15)
    assert ssim(a, b) == pytest.approx(_ref_ssim(a, b, win=7), abs=1e-10)
    assert abs(ssim(a, a) - 1.0) < 1e-12
    tiny = _textured(1, 1, 3)
    assert math.isfinite(ssim(tiny, _noisy(tiny, 10)))


# ---------------------------------------------------------------- MS-SSIM

def test_ms_ssim_scale_counts():
    assert ms_ssim_scales_for(256, 256) == 5
    assert ms_ssim_scales_for(512, 768) == 5
    assert ms_ssim_scales_for(176, 300) == 5  # coarsest scale 11 px
    assert ms_ssim_scales_for(300, 175) == 4  # coarsest would be 10 px
    assert ms_ssim_scales_for(32, 32) == 2
    assert ms_ssim_scales_for(21, 64) == 1
    assert ms_ssim_scales_for(8, 8) == 1


def test_ms_ssim_identical_is_one_with_5_scales():
    a = _textured(256, 256)
    value, scales = ms_ssim(a, a.copy())
    assert scales == 5
    # The published weights sum to 1.0001 and are used as is: 1 ** w == 1 anyway.
    assert abs(value - 1.0) < 1e-12


def test_ms_ssim_decreases_with_noise():
    a = _textured(192, 200, seed=6)
    values = [ms_ssim(a, _noisy(a, sd))[0] for sd in (2, 10, 30)]
    assert values[0] > values[1] > values[2]
    assert values[0] < 1.0


def _pool(x: np.ndarray) -> np.ndarray:
    x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2].astype(np.float64)
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4


def _ref_ms_ssim_2_scales(a: np.ndarray, b: np.ndarray) -> float:
    w = np.array([0.0448, 0.2856])
    w /= w.sum()
    out = []
    for k in range(a.shape[2]):
        _, cs1 = _ref_ssim_cs(a[:, :, k], b[:, :, k])
        s2, _ = _ref_ssim_cs(_pool(a[:, :, k]), _pool(b[:, :, k]))
        out.append(max(cs1, 0) ** w[0] * max(s2, 0) ** w[1])
    return float(np.mean(out))


@pytest.mark.parametrize("h, w, c, seed", [(32, 32, 2, 7), (33, 35, 1, 8)])  # odd sizes drop a row/column
def test_ms_ssim_small_images_use_2_scales_and_match_reference(h, w, c, seed):
    a = _textured(h, w, c, seed=seed)
    b = _noisy(a, 12)
    value, scales = ms_ssim(a, b)
    assert scales == 2
    assert value == pytest.approx(_ref_ms_ssim_2_scales(a, b), abs=1e-10)
    assert value != pytest.approx(ssim(a, b), abs=1e-3)  # really multi-scale


def test_ms_ssim_one_scale_is_ssim_and_too_many_scales_raise():
    a = _textured(64, 64)
    b = _noisy(a, 10)
    assert ms_ssim(a, b, scales=1) == (pytest.approx(ssim(a, b), abs=1e-12), 1)
    assert ms_ssim(a, b)[1] == 3
    with pytest.raises(ValueError):
        ms_ssim(a, b, scales=4)


def test_ms_ssim_5_scales_use_published_weights_unchanged():
    # The published weights sum to 1.0001; pytorch-msssim / CompressAI use them as is.
    assert sum(metrics.MS_SSIM_WEIGHTS) == pytest.approx(1.0001)
    a = _textured(180, 190, 2, seed=9)
    b = _noisy(a, 40)
    x = np.moveaxis(a, 2, 0).astype(np.float64)
    y = np.moveaxis(b, 2, 0).astype(np.float64)
    expected = np.ones(2)
    for k, w in enumerate(metrics.MS_SSIM_WEIGHTS):  # per-scale terms validated by the SSIM tests
        s, cs = metrics._ssim_cs(x, y, 11, 255.0)
        expected *= np.maximum(s if k == 4 else cs, 0) ** w
        x, y = _pool(x.transpose(1, 2, 0)).transpose(2, 0, 1), _pool(y.transpose(1, 2, 0)).transpose(2, 0, 1)
    assert ms_ssim(a, b) == (pytest.approx(expected.mean(), abs=1e-12), 5)


# ---------------------------------------------------------------- Bjøntegaard

RATES = np.array([0.1, 0.25, 0.5, 1.0, 2.0])
PSNRS = np.array([27.0, 30.5, 33.0, 36.2, 39.8])


def test_bd_rate_of_curve_against_itself_is_zero():
    assert abs(bd_rate(RATES, PSNRS, RATES, PSNRS)) < 1e-9
    assert abs(bd_psnr(RATES, PSNRS, RATES, PSNRS)) < 1e-9


def test_bd_rate_half_and_double_rate():
    assert bd_rate(RATES, PSNRS, RATES / 2, PSNRS) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES, PSNRS, RATES * 2, PSNRS) == pytest.approx(100.0, abs=1e-6)
    # 3 points (quadratic fit) and 2 points (linear) work too
    assert bd_rate(RATES[:3], PSNRS[:3], RATES[:3] / 2, PSNRS[:3]) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES[:2], PSNRS[:2], RATES[:2] * 2, PSNRS[:2]) == pytest.approx(100.0, abs=1e-6)


def test_bd_rate_averages_over_overlap_only():
    # anchor: ln R = 0.1 d on [28, 40]; test: ln R = 0.1 d + 0.02 (d - 30) on [30, 45].
    # Overlap [30, 40]: the mean ln-rate difference is 0.02 * 5 = 0.1.
    d1 = np.linspace(28, 40, 6)
    d2 = np.linspace(30, 45, 7)
    r1 = np.exp(0.1 * d1)
    r2 = np.exp(0.1 * d2 + 0.02 * (d2 - 30))
    assert bd_rate(r1, d1, r2, d2) == pytest.approx((math.exp(0.1) - 1) * 100, abs=1e-6)


def test_bd_rate_sorts_and_drops_duplicates():
    order = [3, 0, 4, 1, 2]
    shuffled = bd_rate(RATES[order], PSNRS[order], RATES / 2, PSNRS)
    assert shuffled == pytest.approx(-50.0, abs=1e-6)
    dup_r = np.append(RATES, 5.0)  # a second point at 39.8 dB: dropped (lowest rate kept)
    dup_d = np.append(PSNRS, PSNRS[-1])
    assert bd_rate(dup_r, dup_d, RATES / 2, PSNRS) == pytest.approx(-50.0, abs=1e-6)


def test_bd_rate_degenerate_cases():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS + 20) is None  # 47..60 dB vs 27..40 dB
    assert bd_rate(RATES[:1], PSNRS[:1], RATES, PSNRS) is None  # a single point
    assert bd_rate([1.0, 2.0], [30.0, 30.0], RATES, PSNRS) is None  # one distinct PSNR
    with pytest.raises(ValueError):
        bd_rate(RATES, np.append(PSNRS[:-1], math.inf), RATES, PSNRS)
    with pytest.raises(ValueError):
        bd_rate(np.append(RATES[:-1], 0.0), PSNRS, RATES, PSNRS)


def test_bd_psnr_of_shifted_curve():
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS + 1.0) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS - 0.5) == pytest.approx(-0.5, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES * 100, PSNRS) is None  # no rate overlap
    # better codec: same quality at half the rate -> positive BD-PSNR, negative BD-rate
    assert bd_psnr(RATES, PSNRS, RATES / 2, PSNRS) > 0
