"""A learned lifting wavelet: JPEG 2000's CDF 9/7 lifting steps, plus learned nonlinear
prediction and update steps on each level (torch).

Lifting is invertible whatever its steps compute, so the synthesis is the exact inverse of
the analysis for any weights: training changes what the coefficients mean, never whether the
image comes back. Everything learned starts at zero (the colour transform starts as JPEG
2000's ICT), so the untrained transform *is* the classical one and training only improves it.

Layout of a decomposition with L levels: a list [LL_L, D_L, ..., D_1] where LL_L is
(N, 3, H/2^L, W/2^L) and D_l is (N, 9, H/2^l, W/2^l), channels orientation-major
(HL, LH, HH), each with its three colour components.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 5
ORIENTATIONS = 3  # HL, LH, HH
# CDF 9/7 lifting factors (JPEG 2000 Part 1, irreversible transform).
ALPHA, BETA, GAMMA, DELTA = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
K97 = 1.230174104914001  # with 1/K on the low-pass and K/2 on the high-pass: unit-gain filters
# ICT: RGB to YCbCr (JPEG 2000 Part 1).
NORM_SIGNAL = 4096  # samples: far longer than a level-5 basis function, so borders do not matter
ICT = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


# ---------------------------------------------------------------- the fixed 9/7 steps

def _next(a: torch.Tensor, dim: int) -> torch.Tensor:
    """a[n + 1] along dim, the last sample repeated: whole-sample symmetric extension for the
    predict step of an even-length signal."""
    return torch.cat([a.narrow(dim, 1, a.shape[dim] - 1), a.narrow(dim, a.shape[dim] - 1, 1)], dim)


def _prev(a: torch.Tensor, dim: int) -> torch.Tensor:
    """a[n - 1] along dim, the first sample repeated (symmetric extension for the update)."""
    return torch.cat([a.narrow(dim, 0, 1), a.narrow(dim, 0, a.shape[dim] - 1)], dim)


def analysis_1d(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of the 9/7 along dim (even length): (low, high)."""
    pairs = x.unfold(dim, 2, 2)
    s, d = pairs[..., 0], pairs[..., 1]
    d = d + ALPHA * (s + _next(s, dim))
    s = s + BETA * (_prev(d, dim) + d)
    d = d + GAMMA * (s + _next(s, dim))
    s = s + DELTA * (_prev(d, dim) + d)
    return s / K97, d * (K97 / 2)


def synthesis_1d(s: torch.Tensor, d: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of analysis_1d: the steps undone in reverse order, then interleaved."""
    s, d = s * K97, d / (K97 / 2)
    s = s - DELTA * (_prev(d, dim) + d)
    d = d - GAMMA * (s + _next(s, dim))
    s = s - BETA * (_prev(d, dim) + d)
    d = d - ALPHA * (s + _next(s, dim))
    return torch.stack([s, d], dim).flatten(dim - 1, dim)  # dim is -1 or -2: interleave


def analysis_2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> LL (N, C, H/2, W/2) and details (N, 3C, H/2, W/2), orientation-major."""
    lo, hi = analysis_1d(x, -1)        # along rows: horizontal low / high
    ll, lh = analysis_1d(lo, -2)       # then columns
    hl, hh = analysis_1d(hi, -2)
    return ll, torch.cat([hl, lh, hh], 1)


def synthesis_2d(ll: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
    hl, lh, hh = details.chunk(ORIENTATIONS, 1)
    lo = synthesis_1d(ll, lh, -2)
    hi = synthesis_1d(hl, hh, -2)
    return synthesis_1d(lo, hi, -1)


# ---------------------------------------------------------------- learned steps

class LiftingStep(nn.Module):
    """A small convolutional network whose output is added to one polyphase part, computed
    from the other; starts at zero."""

    def __init__(self, channels_in: int, channels_out: int, hidden: int):
        super().__init__()
        self.inp = nn.Conv2d(channels_in, hidden, 3, padding=1, padding_mode="replicate")
        self.mid = nn.Conv2d(hidden, hidden, 3, padding=1, padding_mode="replicate")
        self.out = nn.Conv2d(hidden, channels_out, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.mid(F.gelu(self.inp(a)))))


class LearnedWavelet(nn.Module):
    """Colour transform, then per level: the fixed 2-D 9/7, a learned prediction of the
    details from the low-pass (details -= P(LL)) and a learned update (LL += U(details))."""

    def __init__(self, levels: int = LEVELS, hidden: int = 16):
        super().__init__()
        self.levels = levels
        self.hidden = hidden
        self.colour = nn.Parameter(torch.tensor(ICT, dtype=torch.float32))
        self.predict = nn.ModuleList(LiftingStep(3, 3 * ORIENTATIONS, hidden) for _ in range(levels))
        self.update = nn.ModuleList(LiftingStep(3 * ORIENTATIONS, 3, hidden) for _ in range(levels))

    def analysis(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in 0..1, H and W multiples of 2^levels -> [LL_L, D_L, ..., D_1],
        in 0..255 units."""
        a = torch.einsum("ij,njhw->nihw", self.colour, (x - 0.5) * 255.0)
        details = []
        for level in range(self.levels):
            a, d = analysis_2d(a)
            d = d - self.predict[level](a)
            a = a + self.update[level](d)
            details.append(d)
        return [a] + details[::-1]

    def synthesis(self, bands: list[torch.Tensor]) -> torch.Tensor:
        """The exact inverse of analysis (up to float rounding): pixels in 0..1, unclamped."""
        a = bands[0]
        for level, d in zip(reversed(range(self.levels)), bands[1:]):
            a = a - self.update[level](d)
            d = d + self.predict[level](a)
            a = synthesis_2d(a, d)
        return torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.colour), a) / 255.0 + 0.5

    def architecture(self) -> dict:
        return {"levels": self.levels, "hidden": self.hidden}


def _basis_norm_1d(level: int, high: bool, length: int = NORM_SIGNAL) -> float:
    """L2 norm of the 1-D signal one unit coefficient of `level` (low or high part) makes."""
    n = length >> level
    low, det = torch.zeros(1, n, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64)
    (det if high else low)[0, n // 2] = 1.0
    x = synthesis_1d(low, det, -1)
    for _ in range(level - 1):
        x = synthesis_1d(x, torch.zeros_like(x), -1)
    return float(x.norm())


def synthesis_norms(levels: int = LEVELS) -> list[np.ndarray]:
    """Per band of the *fixed* transform, the L2 norm (in 0..255 pixel units, RGB) of the image
    one unit coefficient makes: what a unit of quantization error there costs in distortion.
    Same layout as LearnedWavelet.analysis: [(3,), (9,), ...]. The 2-D transform is separable,
    so each norm is a product of two 1-D ones and the colour's."""
    colour = np.linalg.norm(np.linalg.inv(np.asarray(ICT)), axis=0)
    low = {lv: _basis_norm_1d(lv, False) for lv in range(1, levels + 1)}
    high = {lv: _basis_norm_1d(lv, True) for lv in range(1, levels + 1)}
    out = [low[levels] ** 2 * colour]
    for lv in range(levels, 0, -1):
        # HL: high along rows, low along columns; LH the other way; HH high both ways.
        out.append(np.concatenate([high[lv] * low[lv] * colour, low[lv] * high[lv] * colour,
                                   high[lv] ** 2 * colour]))
    return out
