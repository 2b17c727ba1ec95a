"""The integer predictor of the `mlp` method: causal neighbourhoods, the fixed-point network
and the context energy.

Everything here decides how bits are parsed, so it is integer arithmetic only. The matrix
products run through float64 BLAS for speed, but every operand is an integer and every
partial sum stays below 2**53 (bounds noted where they are enforced), so each product and
sum is exact and the result cannot depend on summation order, FMA or the machine.
`reference_forward` below is the plain-Python definition the fast path must equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Causal neighbours (dx, dy), all decoded before (x, y) in the wavefront t = x + 2y.
NEIGHBOURS = ((-1, 0), (-2, 0), (-2, -1), (-1, -1), (0, -1), (1, -1), (-1, -2), (0, -2), (1, -2))
PAD_TOP, PAD_LEFT, PAD_RIGHT = 2, 2, 1
ACT_BITS = 8  # hidden activations carry 8 fractional bits
WEIGHT_MAX = 1 << 15
INPUT_MAX = 255  # inputs are differences of two samples' values and a reference in 0..255
EXACT_LIMIT = 1 << 52  # every partial sum stays below: float64 represents it exactly
# The context energy's local activity |W - NW| + |N - NW| + |NE - N|, as neighbour pairs.
GRADIENT_PAIRS = (((-1, 0), (-1, -1)), ((0, -1), (-1, -1)), ((1, -1), (0, -1)))


def coding_order(channels: int) -> list[int]:
    """G first: it is the most informative channel for predicting R and B."""
    return {1: [0], 2: [0, 1], 3: [1, 0, 2], 4: [1, 0, 2, 3]}[channels]


def prior_channels(channels: int) -> dict[int, list[int]]:
    """For each channel, the already-coded channels of the same pixel that predict it."""
    order = coding_order(channels)
    colour = [c for c in order if c < 3] if channels >= 3 else []
    prior = {}
    for c in order:
        prior[c] = colour[:colour.index(c)] if c in colour else []
    return prior


def pad_planes(image: np.ndarray) -> np.ndarray:
    """(C, H + PAD_TOP, W + PAD_LEFT + PAD_RIGHT) int32, edge-replicated. The decoder
    reproduces the padding causally: row 0 and column 0 are coded first, and the right
    column is copied as each last-column sample is decoded."""
    return np.pad(np.moveaxis(image, 2, 0).astype(np.int32), ((0, 0), (PAD_TOP, 0), (PAD_LEFT, PAD_RIGHT)),
                  mode="edge")


def med(w: np.ndarray, n: np.ndarray, nw: np.ndarray) -> np.ndarray:
    """LOCO-I median edge detector: the reference the network corrects."""
    # np.clip's Python wrapper costs more than the work on a wavefront's few hundred pixels.
    return np.minimum(np.maximum(w + n - nw, np.minimum(w, n)), np.maximum(w, n))


@lru_cache(maxsize=64)
def input_layout(channel: int, priors: tuple[int, ...], pw: int, plane: int):
    """Flat offsets of every sample the inputs need, and where each group's W, N, NW sit."""
    nb = [dy * pw + dx for dx, dy in NEIGHBOURS]
    offs, groups = [channel * plane + o for o in nb], [0] * len(nb)
    for g, p in enumerate(priors, start=1):
        offs += [p * plane] + [p * plane + o for o in nb]
        groups += [g] * (len(nb) + 1)
    starts = [0] + [len(nb) + (g - 1) * (len(nb) + 1) + 1 for g in range(1, len(priors) + 1)]
    w_i, n_i, nw_i = NEIGHBOURS.index((-1, 0)), NEIGHBOURS.index((0, -1)), NEIGHBOURS.index((-1, -1))
    return (np.array(offs, dtype=np.int64), np.array(groups),
            np.array([s + w_i for s in starts]), np.array([s + n_i for s in starts]),
            np.array([s + nw_i for s in starts]))


def gather_inputs(stack: np.ndarray, flat_pos: np.ndarray, channel: int, priors: list[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (one row per pixel) and the reference value of `channel`.

    `stack` is the (C, H', W') padded planes, `flat_pos` positions within one plane. Each
    channel's neighbourhood is given relative to its own MED reference, so the inputs
    describe local shape, not brightness; a prior channel also gives its current sample.
    """
    offs, groups, w_i, n_i, nw_i = input_layout(channel, tuple(priors), stack.shape[2], stack[0].size)
    v = stack.reshape(-1)[flat_pos[:, None] + offs]
    refs = med(v[:, w_i], v[:, n_i], v[:, nw_i])
    return v - refs[:, groups], refs[:, 0]


def input_size(n_priors: int) -> int:
    return len(NEIGHBOURS) + n_priors * (len(NEIGHBOURS) + 1)


@dataclass
class IntegerNet:
    """Two hidden ReLU layers in fixed point, and the trained head.

    z1 = W1 x + b1 has scale 2**s1; a1 = relu(z1) >> (s1 - ACT_BITS).
    z2 = W2 a1 + b2 has scale 2**(s2 + ACT_BITS); a2 = relu(z2) >> s2.
    The head gives the offset from the reference: (wh . a2 + bh + half) >> (sh + ACT_BITS).
    `check_bounds` proves on loading that no sum can reach 2**52 for any input.
    """
    w1: np.ndarray
    b1: np.ndarray
    s1: int
    w2: np.ndarray
    b2: np.ndarray
    s2: int
    wh: np.ndarray
    bh: int
    sh: int

    def __post_init__(self):
        self.w1t = self.w1.T.astype(np.float64)
        self.w2t = self.w2.T.astype(np.float64)
        self.b1f = self.b1.astype(np.float64)
        self.b2f = self.b2.astype(np.float64)
        self.whf = self.wh.astype(np.float64)

    def hidden_bounds(self) -> np.ndarray:
        """Largest possible a2 per unit, for inputs of magnitude up to INPUT_MAX."""
        z1 = np.abs(self.w1).sum(axis=1) * INPUT_MAX + np.abs(self.b1)
        a1 = z1 >> (self.s1 - ACT_BITS)
        z2 = np.abs(self.w2) @ a1 + np.abs(self.b2)
        if max(z1.max(), z2.max()) >= EXACT_LIMIT:
            raise ValueError("weights outside the exact-arithmetic bounds")
        return z2 >> self.s2

    def hidden(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.w1t
        z += self.b1f
        _relu_shift(z, self.s1 - ACT_BITS)
        z = z @ self.w2t
        z += self.b2f
        _relu_shift(z, self.s2)
        return z

    def head(self, a2: np.ndarray) -> np.ndarray:
        shift = self.sh + ACT_BITS
        z = a2 @ self.whf + float(self.bh + (1 << (shift - 1)))
        return np.floor(z * 2.0 ** -shift).astype(np.int64)

    def as_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": np.asarray(getattr(self, k)) for k in
                ("w1", "b1", "s1", "w2", "b2", "s2", "wh", "bh", "sh")}

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str) -> "IntegerNet":
        get = lambda k: arrays[f"{prefix}{k}"]  # noqa: E731
        net = cls(get("w1").astype(np.int64), get("b1").astype(np.int64), int(get("s1")),
                  get("w2").astype(np.int64), get("b2").astype(np.int64), int(get("s2")),
                  get("wh").astype(np.int64), int(get("bh")), int(get("sh")))
        if net.s1 < ACT_BITS or not 0 <= net.s2 <= 60 or not 0 <= net.sh <= 60:
            raise ValueError("bad shifts in weights")
        bound = net.hidden_bounds()
        if (np.abs(net.wh) @ bound + abs(net.bh) + (1 << (net.sh + ACT_BITS))) >= EXACT_LIMIT:
            raise ValueError("weights outside the exact-arithmetic bounds")
        return net


def _relu_shift(z: np.ndarray, shift: int) -> None:
    # Scaling by a power of two is exact, so floor(z * 2**-k) is the integer shift z >> k.
    np.maximum(z, 0, out=z)
    z *= 2.0 ** -shift
    np.floor(z, out=z)


def reference_forward(net: IntegerNet, x: list[int]) -> tuple[list[int], int]:
    """Plain Python integers, one pixel: the definition `hidden`/`head` must match exactly."""
    a1 = []
    for row, b in zip(net.w1.tolist(), net.b1.tolist()):
        z = sum(w * v for w, v in zip(row, x)) + b
        a1.append(max(z, 0) >> (net.s1 - ACT_BITS))
    a2 = []
    for row, b in zip(net.w2.tolist(), net.b2.tolist()):
        z = sum(w * v for w, v in zip(row, a1)) + b
        a2.append(max(z, 0) >> net.s2)
    shift = net.sh + ACT_BITS
    out = (sum(w * v for w, v in zip(net.wh.tolist(), a2)) + net.bh + (1 << (shift - 1))) >> shift
    return a2, out


def linear_head(parts: list[np.ndarray], coeffs: list[np.ndarray], const: int, shift: int) -> np.ndarray:
    """Per-image head: integer coefficients over integer feature blocks, rounded shift.
    The caller checks sum |coeff| * max |feature| < 2**52 (`head_bound`)."""
    z = float(const + (1 << (shift - 1)))
    for f, c in zip(parts, coeffs):
        z = z + f @ c
    return np.floor(z * 2.0 ** -shift).astype(np.int64)


# The context energy is a weighted sum of features the decoder already knows: |residual| of this
# channel at these neighbours, the local activity |W - NW| + |N - NW| + |NE - N|, and |residual|
# of each channel already coded at this pixel (the strongest single cue), plus a constant.
ENERGY_NEIGHBOURS = ((-1, 0), (0, -1), (-1, -1), (1, -1), (-2, 0), (0, -2), (1, -2), (-2, -1))
# The format's fixed energy (files without per-image weights): W and N residuals twice, NW and
# NE once, the activity once, prior channels' residuals twice.
FIXED_NEIGHBOUR_WEIGHTS = (2, 2, 1, 1, 0, 0, 0, 0)
FIXED_ACTIVITY_WEIGHT, FIXED_PRIOR_WEIGHT = 1, 2


def energy_size(n_priors: int) -> int:
    """Weights of one channel's energy: neighbours, activity, priors, the constant."""
    return len(ENERGY_NEIGHBOURS) + 1 + n_priors + 1


def fixed_energy_weights(n_priors: int) -> np.ndarray:
    return np.array(FIXED_NEIGHBOUR_WEIGHTS + (FIXED_ACTIVITY_WEIGHT,) + (FIXED_PRIOR_WEIGHT,) * n_priors + (0,),
                    dtype=np.int64)


@lru_cache(maxsize=64)
def energy_layout(channel: int, priors: tuple[int, ...], pw: int, plane: int):
    """Offsets of the residuals the energy reads (neighbours, then prior channels), and the
    activity's pairs as a difference matrix over the own-channel inputs of `gather_inputs`."""
    offs = [channel * plane + dy * pw + dx for dx, dy in ENERGY_NEIGHBOURS] + [p * plane for p in priors]
    diff = np.zeros((input_size(len(priors)), 3))
    idx = {nb: i for i, nb in enumerate(NEIGHBOURS)}
    for col, (a, b) in enumerate(GRADIENT_PAIRS):
        diff[idx[a], col], diff[idx[b], col] = 1, -1
    return np.array(offs, dtype=np.int64), diff


def gradient_energy(x: np.ndarray, channel: int, priors: list[int]) -> np.ndarray:
    """The local activity |W - NW| + |N - NW| + |NE - N|, from the inputs of `gather_inputs`
    (differences of inputs are differences of samples)."""
    _, diff = energy_layout(channel, tuple(priors), 0, 0)
    return np.abs(x @ diff).sum(axis=1)


def energy_features(res: np.ndarray, flat_pos: np.ndarray, activity: np.ndarray, channel: int,
                    priors: list[int]) -> np.ndarray:
    """(n, energy_size - 1) int64: the features in weight order, the constant left out. `res`
    is the padded (C, H', W') residual stack, `activity` the `gradient_energy` of the samples."""
    offs, _ = energy_layout(channel, tuple(priors), res.shape[2], res[0].size)
    r = np.abs(res.reshape(-1)[flat_pos[:, None] + offs].astype(np.int64))
    n_nb = len(ENERGY_NEIGHBOURS)
    return np.concatenate([r[:, :n_nb], np.asarray(activity, np.int64)[:, None], r[:, n_nb:]], axis=1)


def context_energy(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """How large the residual is likely to be: max(0, weights . features + constant), in
    integers (int64 cannot overflow: features are at most 765, weights below 2**35)."""
    return np.maximum(features @ weights[:-1] + weights[-1], 0)
