"""Image-quality and rate-distortion metrics (numpy only, float64), for the benchmark and the API.

    psnr(a, b)                  -> float            (math.inf for identical images)
    ssim(a, b)                  -> float
    ms_ssim(a, b, scales=None)  -> (float, int)     (value, number of scales used)
    ms_ssim_db(value)           -> float            (-10*log10(1 - MS-SSIM), capped at 100 dB)
    bd_rate(r1, d1, r2, d2)     -> float | None     (percent; negative = test needs fewer bits)
    bd_psnr(r1, d1, r2, d2)     -> float | None     (dB; positive = test is better)
    bits_per_pixel(n_bytes, w, h), bits_per_subpixel(n_bytes, w, h, c)

Images are arrays of shape (H, W) or (H, W, C) on the 0..255 scale (uint8 normally; any real
dtype is accepted and converted to float64). Conventions, chosen to match CompressAI's
evaluation (which uses pytorch-msssim):

* PSNR: one MSE over all samples (all channels together), 10*log10(peak^2 / MSE). Identical
  images give ``math.inf``; callers that average PSNR over a data set must cap it.
* SSIM (Wang et al. 2004): Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  population (biased) variances, 'valid' filtering (no padding): the SSIM map is only computed
  where the whole window fits, and its mean is taken. Colour images: SSIM of each channel,
  then the mean over channels (not SSIM of luma). Images whose smaller side is below 11 use
  the largest odd window that fits (e.g. 7x7 on an 8x8 image, 1x1 on a 1- or 2-pixel side),
  still a sigma-1.5 Gaussian truncated to that size and renormalised to sum 1. Such values
  are not comparable with published 11x11 SSIM numbers; 32x32 (CIFAR) uses the full window.
* MS-SSIM (Wang, Simoncelli, Bovik 2003): up to 5 scales with weights (0.0448, 0.2856,
  0.3001, 0.2363, 0.1333); 2x2 average pooling between scales (an odd last row/column is
  dropped); contrast-structure at every scale and luminance only at the coarsest scale; per
  channel, negative per-scale terms clamped to 0 (as pytorch-msssim does, so fractional
  powers stay real), product over scales, then the mean over channels.
  Scale count: every scale must hold the 11x11 window, i.e. the image's smaller side at
  scale k (halved k-1 times) must be >= 11. So 5 scales need a smaller side >= 176
  (11 * 16); smaller images use the largest count that fits (32x32 -> 2 scales, 11..21 -> 1,
  which equals SSIM), with the *first* (finest-scale) weights renormalised to sum 1 (the
  published 5 weights, which sum to 1.0001, are used unchanged at 5 scales), and
  the scale count is returned so reports can say so. Images smaller than 11 px run a single
  scale with the shrunk SSIM window described above. Differences from pytorch-msssim, none
  of which affects Kodak (768x512, every scale even and >= 32 px): it asserts a side > 160
  and at 161..175 its coarsest scale (10 px) is smaller than the window (we use 4 scales
  there); on odd sizes it zero-pads before pooling (we drop the odd row/column). On even
  sizes >= 176 the two agree to ~1e-15 (checked against a float64 torch re-implementation).
* BD-rate / BD-PSNR (Bjøntegaard, VCEG-M33): cubic fit (degree len-1 with 2 or 3 points) of
  ln(rate) against PSNR (BD-rate) or of PSNR against ln(rate) (BD-PSNR), integrated over the
  overlapping interval. Points are sorted by the fitted-against variable; duplicates of it
  are dropped (the first after sorting by (x, y) is kept). Rates must be positive and all
  values finite (cap infinite PSNR first). Fewer than 2 distinct points or no overlap -> None.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

WIN_SIZE = 11
WIN_SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ---------------------------------------------------------------------------- helpers

def bits_per_pixel(n_bytes: int, w: int, h: int) -> float:
    """File bits per pixel: 8 * n_bytes / (w * h)."""
    return 8.0 * n_bytes / (w * h)


def bits_per_subpixel(n_bytes: int, w: int, h: int, c: int) -> float:
    """File bits per sub-pixel (sample): 8 * n_bytes / (w * h * c)."""
    return 8.0 * n_bytes / (w * h * c)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (C, H, W) arrays (planes contiguous, for the filter)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) array, got shape {a.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    else:
        a, b = np.moveaxis(a, 2, 0), np.moveaxis(b, 2, 0)
    return np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)


# ---------------------------------------------------------------------------- PSNR

def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB over all samples (channels together); ``math.inf`` when a == b exactly."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


# ---------------------------------------------------------------------------- SSIM core

def gaussian_window(size: int = WIN_SIZE, sigma: float = WIN_SIGMA) -> np.ndarray:
    """1-D Gaussian of odd ``size`` centred on the middle tap, normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def window_size_for(h: int, w: int) -> int:
    """The SSIM window used on an h x w image: 11, or the largest odd size <= min(h, w)."""
    n = min(WIN_SIZE, h, w)
    return n if n % 2 == 1 else n - 1


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of the (P, H, W) planes x with the symmetric 1-D window g.

    Vectorised over pixels; the Python loops run over taps and over blocks of output rows
    (a block and its vertical pass stay in cache, ~3x faster than whole-image passes).
    """
    k = g.size
    h = k // 2
    p, rows, cols = x.shape
    ho, wo = rows - k + 1, cols - k + 1
    out = np.empty((p, ho, wo))
    block = max(4, (1 << 18) // (p * cols))  # ~2 MB of float64 source rows per block
    for r0 in range(0, ho, block):
        n = min(block, ho - r0)
        src = x[:, r0:r0 + n + k - 1]
        v = g[h] * src[:, h:h + n]  # vertical pass, taps paired by symmetry
        tmp = np.empty_like(v)
        for i in range(h):
            np.add(src[:, i:i + n], src[:, k - 1 - i:k - 1 - i + n], out=tmp)
            tmp *= g[i]
            v += tmp
        o = out[:, r0:r0 + n]  # horizontal pass, written straight into the output
        np.multiply(v[:, :, h:h + wo], g[h], out=o)
        tmp = np.empty_like(o)
        for i in range(h):
            np.add(v[:, :, i:i + wo], v[:, :, k - 1 - i:k - 1 - i + wo], out=tmp)
            tmp *= g[i]
            o += tmp
    return out


def _ssim_cs(a: np.ndarray, b: np.ndarray, win: int, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term, for float64 (C, H, W) arrays."""
    g = gaussian_window(win)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    ch = a.shape[0]
    # One filtering pass over the 5 * C planes a, b, a^2, b^2, ab.
    f = _filter_valid(np.concatenate([a, b, a * a, b * b, a * b]), g)
    mu_a, mu_b, e_aa, e_bb, e_ab = (f[i * ch:(i + 1) * ch] for i in range(5))
    mu_ab = mu_a * mu_b
    mu_a *= mu_a  # mu_a^2, mu_b^2 from here on (in place: fewer full-size temporaries)
    mu_b *= mu_b
    e_aa -= mu_a  # variances and covariance (population, as in the paper)
    e_bb -= mu_b
    e_ab -= mu_ab
    cs_map = (2.0 * e_ab + c2) / (e_aa + e_bb + c2)
    lum_map = (2.0 * mu_ab + c1) / (mu_a + mu_b + c1)
    lum_map *= cs_map
    return lum_map.mean(axis=(1, 2)), cs_map.mean(axis=(1, 2))


def ssim(a, b, data_range: float = DATA_RANGE) -> float:
    """SSIM (Wang et al. 2004), 11x11 Gaussian sigma 1.5, 'valid' filtering, mean over channels.

    Images with a side below 11 use the largest odd window that fits (see the module doc).
    """
    a, b = _pair(a, b)
    win = window_size_for(a.shape[1], a.shape[2])
    s, _ = _ssim_cs(a, b, win, data_range)
    return float(s.mean())


# ---------------------------------------------------------------------------- MS-SSIM

def ms_ssim_scales_for(h: int, w: int) -> int:
    """Scales MS-SSIM uses on an h x w image: most k <= 5 with min(h, w) >> (k-1) >= 11, at least 1."""
    side = min(h, w)
    k = 1
    while k < len(MS_SSIM_WEIGHTS) and (side >> k) >= WIN_SIZE:
        k += 1
    return k


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (C, H, W) planes; an odd last row/column is dropped."""
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
    x = x[:, :h, :w]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def ms_ssim(a, b, scales: int | None = None, data_range: float = DATA_RANGE) -> tuple[float, int]:
    """MS-SSIM (Wang, Simoncelli, Bovik 2003); returns (value, number of scales used).

    ``scales=None`` uses as many of the 5 standard scales as fit (5 for a smaller side >= 176;
    see the module doc); an explicit count must fit too. With k < 5 scales the first k weights
    are renormalised to sum 1; with 1 scale the value is SSIM (clamped at 0).
    """
    a, b = _pair(a, b)
    h, w = a.shape[1], a.shape[2]
    fit = ms_ssim_scales_for(h, w)
    if scales is None:
        scales = fit
    elif not 1 <= scales <= fit:
        raise ValueError(f"{scales} MS-SSIM scales do not fit a {h}x{w} image (at most {fit})")
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
    if scales < len(MS_SSIM_WEIGHTS):  # the published 5 weights (sum 1.0001) are used as is
        weights /= weights.sum()
    win = window_size_for(h, w)  # 11 whenever scales > 1
    value = np.ones(a.shape[0])
    for k in range(scales):
        s, cs = _ssim_cs(a, b, win, data_range)
        last = k == scales - 1
        value *= np.maximum(s if last else cs, 0.0) ** weights[k]
        if not last:
            a, b = _downsample(a), _downsample(b)
    return float(value.mean()), scales


MS_SSIM_DB_CAP = 100.0  # identical images (MS-SSIM 1) would be infinite dB, like PSNR


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on CompressAI's dB scale, -10*log10(1 - MS-SSIM): on the linear scale every
    good codec bunches just under 1, in dB their differences show. Capped at MS_SSIM_DB_CAP."""
    if value >= 1.0:
        return MS_SSIM_DB_CAP
    return min(-10.0 * math.log10(1.0 - value), MS_SSIM_DB_CAP)


# ---------------------------------------------------------------------------- Bjøntegaard

def _curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"curve has {x.size} x values but {y.size} y values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("non-finite rate or PSNR in an RD curve (cap infinite PSNR first)")
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    x, y = x[keep], y[keep]
    if x.size < 2:
        return None
    return x, y


def _bd(x1, y1, x2, y2) -> float | None:
    """Mean of (fit2 - fit1) over the overlapping x interval; y fitted as a polynomial of x."""
    c1, c2 = _curve(x1, y1), _curve(x2, y2)
    if c1 is None or c2 is None:
        return None
    (x1, y1), (x2, y2) = c1, c2
    lo = max(x1[0], x2[0])
    hi = min(x1[-1], x2[-1])
    if not hi > lo:
        return None
    p1 = np.polyint(np.polyfit(x1, y1, min(3, x1.size - 1)))
    p2 = np.polyint(np.polyfit(x2, y2, min(3, x2.size - 1)))
    int1 = np.polyval(p1, hi) - np.polyval(p1, lo)
    int2 = np.polyval(p2, hi) - np.polyval(p2, lo)
    return float((int2 - int1) / (hi - lo))


def _log_rates(rates) -> np.ndarray:
    r = np.asarray(rates, dtype=np.float64)
    if np.any(~(r > 0)):
        raise ValueError("rates must be positive")
    return np.log(r)


def bd_rate(rate_anchor, dist_anchor, rate_test, dist_test) -> float | None:
    """Bjøntegaard delta rate in percent at equal PSNR (negative = test needs fewer bits).

    None when a curve has fewer than 2 distinct PSNR points or the PSNR ranges do not overlap.
    """
    d = _bd(dist_anchor, _log_rates(rate_anchor), dist_test, _log_rates(rate_test))
    return None if d is None else (math.exp(d) - 1.0) * 100.0


def bd_psnr(rate_anchor, dist_anchor, rate_test, dist_test) -> float | None:
    """Bjøntegaard delta PSNR in dB at equal rate (positive = test is better).

    None when a curve has fewer than 2 distinct rates or the log-rate ranges do not overlap.
    """
    return _bd(_log_rates(rate_anchor), dist_anchor, _log_rates(rate_test), dist_test)
