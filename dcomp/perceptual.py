"""Offline perceptual and texture metrics for the lossy benchmark (numpy only, float64).

    haarpsi(a, b)      -> float   HaarPSI in (0, 1], higher = more alike; exactly 1.0 for identical images
    swd_patches(a, b)  -> float   sliced Wasserstein distance of 7x7 luma patches, >= 0, lower = closer

Images are arrays of shape (H, W) or (H, W, C), C in 1, 3, 4, on the 0..255 scale (any real dtype;
a fourth channel, alpha, is ignored). Learned metrics (LPIPS, DISTS, FID) need downloaded networks;
these two need nothing, and between them show what PSNR does not: whether a decoder keeps edges
and texture (an adversarially trained decoder's aim) or smooths them away.

HaarPSI (Reisenhofer, Bosse, Kutyniok, Wiegand 2018, "A Haar wavelet-based perceptual similarity
index for image quality assessment", Signal Processing: Image Communication 61) compares the
magnitudes of Haar wavelet coefficients of the two images. Computed as the authors' reference
implementation (github.com/rgcda/haarpsi, HaarPSI.m and haarPsi.py) computes it:

* colour images go to YIQ (BT.601 coefficients); greyscale images have luma only;
* every plane is pre-filtered with a 2x2 mean and subsampled by 2 (the reference's default, which
  models the viewing distance of the subjective tests the constants were fitted on);
* luma: Haar filters of 2x2, 4x4 and 8x8 pixels, horizontal and vertical. Local similarity per
  orientation = mean over the two finest scales of (2|x||y| + C) / (x^2 + y^2 + C); its weight =
  the larger of the two images' coarsest-scale magnitudes;
* chroma: the same similarity on the 2x2 means of |I| and |Q|, averaged; weight = mean of the two
  luma weights;
* score = (logit_a(sum(w * sigmoid_a(s)) / sum(w)))^2 with sigmoid_a(x) = 1 / (1 + exp(-a x)),
  C = 30, a = 4.2.

Every filter is placed as MATLAB's conv2(..., 'same') places an even-sized kernel, with zeros
outside the image, as in the reference: any image size works (a 1x1 one too), and values agree
with the reference implementation's to ~1e-14 (tests/test_perceptual.py holds values computed
with its haarPsi.py, commit 2c27931, run beside this project with SciPy, on the fixture crops;
the paper reports correlations with subjective scores on databases not at hand here, nothing
one could reproduce offline). Zero padding makes the image border an edge in both images: on a
Kodak image the outer 4 pixels of the subsampled planes (5% of them) carry 10-20% of the weight,
and on tiny images more, which pulls scores towards 1. Kept as in the reference, since its
values are the ones the metric was validated with.

Sliced Wasserstein distance of patches (a texture statistic, after the patch-distribution losses
of texture synthesis): take 7x7 patches of luma (BT.601 Y, 0..255), remove each patch's mean
(brightness is not texture), project them on SWD_PROJECTIONS fixed random unit directions, and
average over the directions the 1-D Wasserstein-1 distance between the two images' sets of
projections (mean absolute difference of the sorted values; grey levels). A blurred
reconstruction loses the patches' high-contrast tails, which moves this 1.5-3x more than white
noise of the same PSNR does (on the fixture crops). Images with more than SWD_MAX_PATCHES
patch positions use a fixed-seed subsample of positions, the same in both images; images
smaller than 7 pixels use the largest patch that fits. Deterministic: the same inputs give the
same value in every call and process.
"""
from __future__ import annotations

import numpy as np

HAARPSI_C = 30.0  # the reference's constants, fitted on subjective quality databases
HAARPSI_ALPHA = 4.2
HAARPSI_SCALES = 3  # Haar filters of 2, 4 and 8 pixels
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.596, -0.274, -0.322],
                       [0.211, -0.523, 0.312]])

SWD_PATCH = 7
SWD_PROJECTIONS = 64
SWD_MAX_PATCHES = 16384  # a Kodak image has ~386k positions: a subsample keeps the cost at ~25 ms
SWD_SEED = 0


def _float_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (H, W, C) arrays, checked to match and to have 1, 3 or 4 channels."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.size == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) array with C in 1, 3, 4, got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def _luma(img: np.ndarray) -> np.ndarray:
    """(H, W) BT.601 luma of a float (H, W, C) image; the channel itself when greyscale."""
    return img[:, :, 0] if img.shape[2] == 1 else img[:, :, :3] @ RGB_TO_YIQ[0]


# ---------------------------------------------------------------------------- HaarPSI

def _yiq_planes(img: np.ndarray) -> np.ndarray:
    """(P, H, W) planes HaarPSI compares: Y, I, Q for colour, Y alone for greyscale."""
    if img.shape[2] == 1:
        return img[None, :, :, 0]
    return np.moveaxis(img[:, :, :3] @ RGB_TO_YIQ.T, 2, 0)


def _mean_2x2(x: np.ndarray) -> np.ndarray:
    """Mean of x[..., i:i+2, j:j+2] at every (i, j), zeros past the last row and column
    (where MATLAB's conv2(x, ones(2)/4, 'same') puts a 2x2 kernel)."""
    p = np.pad(x, ((0, 0), (0, 1), (0, 1)))
    return 0.25 * (p[:, :-1, :-1] + p[:, 1:, :-1] + p[:, :-1, 1:] + p[:, 1:, 1:])


def _subsample(x: np.ndarray) -> np.ndarray:
    """The reference's pre-filter, a 2x2 mean kept at every second row and column: the mean of
    each 2x2 block, an odd last row or column averaged with zeros."""
    p = np.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2)))
    return 0.25 * (p[:, ::2, ::2] + p[:, 1::2, ::2] + p[:, ::2, 1::2] + p[:, 1::2, 1::2])


def _haar_magnitudes(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """|Haar coefficients| of the (H, W) plane y at scales 1 .. HAARPSI_SCALES (filter side
    2**scale, unit L2 norm): (row-difference filter, column-difference filter) per scale.

    With h = 2**(scale-1), the filter at (i, j) covers rows i-h+1 .. i+h and columns j-h+1 .. j+h
    (MATLAB's 'same' placement of an even kernel) and takes the difference of its two halves; box
    sums come from one zero-padded summed-area table, so a scale costs the same at any size."""
    rows, cols = y.shape
    pad = 1 << (HAARPSI_SCALES - 1)  # room for the largest filter
    table = np.zeros((rows + 2 * pad + 1, cols + 2 * pad + 1))
    table[1:, 1:] = np.pad(y, pad).cumsum(0).cumsum(1)

    def box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Sum of y over rows i+r0 .. i+r1-1 and columns j+c0 .. j+c1-1, for every (i, j)."""
        def at(r: int, c: int) -> np.ndarray:
            return table[pad + r:pad + r + rows, pad + c:pad + c + cols]
        return at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)

    magnitudes = []
    for scale in range(1, HAARPSI_SCALES + 1):
        h, norm = 1 << (scale - 1), 2.0 ** -scale
        across_rows = np.abs(box(-h + 1, 1, -h + 1, h + 1) - box(1, h + 1, -h + 1, h + 1)) * norm
        across_cols = np.abs(box(-h + 1, h + 1, -h + 1, 1) - box(-h + 1, h + 1, 1, h + 1)) * norm
        magnitudes.append((across_rows, across_cols))
    return magnitudes


def _similarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The HaarPSI similarity of two magnitudes, in (0, 1]."""
    return (2.0 * x * y + HAARPSI_C) / (x * x + y * y + HAARPSI_C)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-HAARPSI_ALPHA * x))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)) / HAARPSI_ALPHA)


def haarpsi(a: np.ndarray, b: np.ndarray) -> float:
    """HaarPSI of the reconstruction b against the reference a, in (0, 1]; 1.0 when a == b."""
    a, b = _float_pair(a, b)
    if np.array_equal(a, b):  # the formula gives 1 only up to rounding; a lossless decode is exactly 1
        return 1.0
    ref, dist = _subsample(_yiq_planes(a)), _subsample(_yiq_planes(b))
    ref_mags, dist_mags = _haar_magnitudes(ref[0]), _haar_magnitudes(dist[0])
    similarities, weights = [], []
    for o in range(2):  # orientations
        weights.append(np.maximum(ref_mags[-1][o], dist_mags[-1][o]))
        similarities.append(np.mean([_similarity(r[o], d[o]) for r, d in zip(ref_mags[:-1], dist_mags[:-1])],
                                    axis=0))
    if ref.shape[0] == 3:
        chroma_ref, chroma_dist = np.abs(_mean_2x2(ref[1:])), np.abs(_mean_2x2(dist[1:]))
        similarities.append(_similarity(chroma_ref, chroma_dist).mean(axis=0))
        weights.append(0.5 * (weights[0] + weights[1]))
    s, w = np.stack(similarities), np.stack(weights)
    return _logit(float((_sigmoid(s) * w).sum() / w.sum())) ** 2


# ---------------------------------------------------------------------------- patch SWD

def _projection_directions(dim: int) -> np.ndarray:
    """(SWD_PROJECTIONS, dim) unit vectors, the same in every call (fixed seed)."""
    d = np.random.default_rng(SWD_SEED).standard_normal((SWD_PROJECTIONS, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _patch_positions(n_positions: int) -> np.ndarray:
    """All patch positions, or a fixed-seed sorted subsample of SWD_MAX_PATCHES of them."""
    if n_positions <= SWD_MAX_PATCHES:
        return np.arange(n_positions)
    rng = np.random.default_rng(SWD_SEED)
    return np.sort(rng.choice(n_positions, SWD_MAX_PATCHES, replace=False))


def _patches(y: np.ndarray, side: int, positions: np.ndarray) -> np.ndarray:
    """(N, side*side) mean-removed patches of the (H, W) plane y at flat positions (row-major)."""
    windows = np.lib.stride_tricks.sliding_window_view(y, (side, side))
    r, c = np.divmod(positions, windows.shape[1])
    p = windows[r, c].reshape(len(positions), side * side)
    return p - p.mean(axis=1, keepdims=True)


def swd_patches(a: np.ndarray, b: np.ndarray) -> float:
    """Sliced Wasserstein-1 distance between the mean-removed 7x7 luma patches of a and b
    (grey levels, 0..255 scale); 0.0 when a == b, lower = textures closer."""
    a, b = _float_pair(a, b)
    ya, yb = _luma(a), _luma(b)
    side = min(SWD_PATCH, *ya.shape)
    positions = _patch_positions((ya.shape[0] - side + 1) * (ya.shape[1] - side + 1))
    directions = _projection_directions(side * side)
    # One row per direction: sorting along contiguous rows is ~4x faster than down columns.
    pa = np.sort(directions @ _patches(ya, side, positions).T, axis=1)
    pb = np.sort(directions @ _patches(yb, side, positions).T, axis=1)
    return float(np.abs(pa - pb).mean())
