"""Reversible colour transform and PNG-like spatial filters, all mod 256.

The inverses are prefix sums, so decoding is a couple of vectorized cumsums. Used for the
image border of the predictive mode and for the `filtered` mode that wins on graphics.
"""
from __future__ import annotations

import numpy as np

NONE, LEFT, UP, GRADIENT = 0, 1, 2, 3


def colour_forward(image: np.ndarray) -> np.ndarray:
    """R and B minus G: cheap decorrelation, exactly invertible mod 256."""
    out = image.copy()
    if image.shape[2] >= 3:
        out[:, :, 0] = image[:, :, 0] - image[:, :, 1]
        out[:, :, 2] = image[:, :, 2] - image[:, :, 1]
    return out


def colour_inverse(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    colour_inverse_inplace(out)
    return out


def colour_inverse_inplace(image: np.ndarray) -> None:
    """colour_inverse without a copy: a whole decoded image is the largest array there is."""
    if image.shape[2] >= 3:
        image[:, :, 0] += image[:, :, 1]
        image[:, :, 2] += image[:, :, 1]


def filter_forward(plane: np.ndarray, kind: int) -> np.ndarray:
    """Residual of a uint8 (..., H, W) array under a predictor; outside neighbours are 0."""
    p = plane.astype(np.uint8)
    out = p.copy()
    if kind in (LEFT, GRADIENT):
        out[..., :, 1:] -= p[..., :, :-1]
    if kind in (UP, GRADIENT):
        out[..., 1:, :] -= p[..., :-1, :]
    if kind == GRADIENT:
        out[..., 1:, 1:] += p[..., :-1, :-1]
    return out


def filter_inverse(residual: np.ndarray, kind: int) -> np.ndarray:
    out = residual.astype(np.uint8)
    filter_inverse_inplace(out, kind)
    return out


def filter_inverse_inplace(planes: np.ndarray, kind: int) -> None:
    """filter_inverse on a writable uint8 array, without temporaries."""
    # uint8 cumsum wraps mod 256, which is exactly the inverse of the mod-256 differences.
    if kind in (LEFT, GRADIENT):
        np.cumsum(planes, axis=-1, dtype=np.uint8, out=planes)
    if kind in (UP, GRADIENT):
        np.cumsum(planes, axis=-2, dtype=np.uint8, out=planes)
