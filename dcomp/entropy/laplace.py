"""A zero-mean mixture of two Laplace distributions, discretized to integers.

Training uses its differentiable likelihood; coding uses integer frequency tables made from
it once, at export, and stored with the weights. Parsing a file therefore never depends on
floating-point arithmetic on the decoding machine: the tables are data, not computation.
"""
from __future__ import annotations

import math

import numpy as np

PRECISION = 24          # constriction's default ANS precision: frequencies sum to 2**24
TAIL_MASS = 2.0 ** -16  # support ends where the two tails together hold less than this
MAX_SUPPORT = 1023      # |v| beyond this always escapes
LIKELIHOOD_FLOOR = 1e-9


def likelihood(v, log_scales, mix_logit):
    """P(round(v) = v) under the mixture, for noisy or integer v (torch, differentiable).

    log_scales: (..., 2) broadcastable with v[..., None]; mix_logit: weight of the first part.
    """
    import torch

    s = torch.exp(log_scales)
    a = -torch.abs(v).unsqueeze(-1)  # symmetric: P(v) = P(-v), so work on the non-positive side
    hi = a + 0.5
    lo = a - 0.5
    cdf_lo = 0.5 * torch.exp(lo / s)
    cdf_hi = torch.where(hi < 0, 0.5 * torch.exp(torch.clamp(hi, max=0) / s),
                         1 - 0.5 * torch.exp(-torch.clamp(hi, min=0) / s))
    mass = cdf_hi - cdf_lo
    w = torch.sigmoid(mix_logit)
    p = w * mass[..., 0] + (1 - w) * mass[..., 1]
    return torch.clamp(p, min=LIKELIHOOD_FLOOR)


def _masses(support: int, scales: tuple[float, float], weight: float) -> np.ndarray:
    """Probabilities of -support..support and of the escape (everything outside), float64."""
    v = np.arange(-support, support + 1, dtype=np.float64)
    out = np.zeros(2 * support + 2)
    for s, w in ((scales[0], weight), (scales[1], 1.0 - weight)):
        a = -np.abs(v)
        hi, lo = a + 0.5, a - 0.5
        cdf_hi = np.where(hi < 0, 0.5 * np.exp(np.minimum(hi, 0) / s), 1 - 0.5 * np.exp(-np.maximum(hi, 0) / s))
        out[:-1] += w * (cdf_hi - 0.5 * np.exp(lo / s))
        out[-1] += w * np.exp(-(support + 0.5) / s)  # both tails beyond +-support
    return out


def support_for(scales: tuple[float, float], weight: float) -> int:
    """Smallest K whose tails beyond +-K hold less than TAIL_MASS (capped)."""
    s = max(scales[0] if weight > 1e-6 else 0.0, scales[1] if weight < 1 - 1e-6 else 0.0, 1e-3)
    k = math.ceil(s * math.log(1.0 / TAIL_MASS) - 0.5)
    return int(min(max(k, 1), MAX_SUPPORT))


def integer_table(scales: tuple[float, float], weight: float) -> np.ndarray:
    """Frequencies (uint32, sum 2**PRECISION, none zero) of -K..K then escape."""
    k = support_for(scales, weight)
    p = _masses(k, scales, weight)
    total = 1 << PRECISION
    freq = np.maximum(np.floor(p / p.sum() * total).astype(np.int64), 1)
    freq[int(np.argmax(freq))] += total - int(freq.sum())
    return freq.astype(np.uint32)


def build_tables(log_scales: np.ndarray, mix_logit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All tables of a parameter grid, flattened: (frequencies, offsets); table i is
    frequencies[offsets[i]:offsets[i + 1]]. Done once at export, in float64."""
    ls = log_scales.reshape(-1, 2).astype(np.float64)
    ml = mix_logit.reshape(-1).astype(np.float64)
    parts = [integer_table((math.exp(a), math.exp(b)), 1.0 / (1.0 + math.exp(-m))) for (a, b), m in zip(ls, ml)]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in parts])
    return np.concatenate(parts), offsets
