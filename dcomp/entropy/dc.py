"""DC latents as differences from their left neighbour (first column: the one above), and
back: shared by the entropy models of the lossy methods. Integers only."""
from __future__ import annotations

import numpy as np


def dc_residual(d: np.ndarray) -> np.ndarray:
    """(..., h, w) integer planes minus their left neighbour (first column: the one above)."""
    r = d.copy()
    r[..., :, 1:] = d[..., :, 1:] - d[..., :, :-1]
    r[..., 1:, 0] = d[..., 1:, 0] - d[..., :-1, 0]
    return r


def dc_from_residual(r: np.ndarray) -> np.ndarray:
    """The inverse of dc_residual: prefix sums down the first column, then along the rows."""
    d = r.copy()
    d[..., :, 0] = np.cumsum(r[..., :, 0], axis=-1)
    return np.cumsum(d, axis=-1)
