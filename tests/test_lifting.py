"""dcomp.lifting, the transform of `cnn-ae` and `cnn-ae-ft`: untrained, it is JPEG 2000's
ICT and CDF 9/7 (checked against the standard's filter taps, not the lifting steps); with any
learned steps its synthesis inverts its analysis; synthesis_norms is what an impulse
measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcomp import lifting as L

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread




# JPEG 2000 Part 1 (Table F.4), the 9/7 analysis filters, centre tap first: the low-pass has
# unit gain at DC, the high-pass gain 2 at Nyquist (dcomp halves it: unit gain too).
LOW_TAPS = (0.6029490182363579, 0.2668641184428723, -0.07822326652898785, -0.01686411844287495, 0.02674875741080976)
HIGH_TAPS = (1.115087052456994, -0.5912717631142470, -0.05754352622849957, 0.09127176311424948)
ICT = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def filter_along(x: np.ndarray, taps: tuple[float, ...], axis: int, start: int) -> np.ndarray:
    """Symmetric filter with whole-sample symmetric extension, kept at start, start + 2, ..."""
    x = np.moveaxis(x, axis, -1)
    k = len(taps) - 1
    pad = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(k, k)], mode="reflect")
    n = x.shape[-1]
    out = sum(t * (pad[..., k - i:k - i + n] + (pad[..., k + i:k + i + n] if i else 0)) for i, t in enumerate(taps))
    return np.moveaxis(out[..., start::2], -1, axis)


def cdf97_reference(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """[LL_L, D_L, ..., D_1] of images (N, 3, H, W) in 0..1, by convolution with the taps."""
    a = np.einsum("ij,njhw->nihw", ICT, (x - 0.5) * 255.0)
    details = []
    for _ in range(levels):
        lo, hi = filter_along(a, LOW_TAPS, -1, 0), filter_along(a, HIGH_TAPS, -1, 1) / 2  # along rows
        ll, lh = filter_along(lo, LOW_TAPS, -2, 0), filter_along(lo, HIGH_TAPS, -2, 1) / 2
        hl, hh = filter_along(hi, LOW_TAPS, -2, 0), filter_along(hi, HIGH_TAPS, -2, 1) / 2
        details.append(np.concatenate([hl, lh, hh], axis=1))
        a = ll
    return [a] + details[::-1]


def randomized(levels: int, hidden: int, seed: int) -> L.LearnedWavelet:
    """A wavelet whose every learned part is random and far from zero (double precision)."""
    net = L.LearnedWavelet(levels, hidden).double()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, p in net.named_parameters():
            if name == "colour":
                p += 0.2 * torch.randn_like(p)
            else:
                p.normal_(0.0, 0.1)  # larger: the steps compound, coefficients overflow float32
    return net


def test_untrained_transform_is_the_plain_cdf97():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 64, 96))
    net = L.LearnedWavelet().double()
    with torch.no_grad():
        got = [b.numpy() for b in net.analysis(torch.from_numpy(x))]
    want = cdf97_reference(x, L.LEVELS)
    assert [b.shape for b in got] == [(2, 3, 2, 3)] + [(2, 9, 64 >> lv, 96 >> lv) for lv in range(L.LEVELS, 0, -1)]
    # Float noise only: the colour transform is a float32 parameter (7 digits of the ICT).
    for level, (g, w) in enumerate(zip(got, want)):
        assert np.abs(g - w).max() < 1e-6 * (np.abs(w).max() + 1), level


@pytest.mark.parametrize("levels, shape", [(3, (2, 3, 32, 64)), (L.LEVELS, (1, 3, 64, 32))])
def test_random_learned_steps_reconstruct_perfectly(levels, shape):
    net = randomized(levels, 4, seed=levels)
    x = torch.from_numpy(np.random.default_rng(1).random(shape))
    with torch.no_grad():
        bands = net.analysis(x)
        plain = L.LearnedWavelet(levels, 4).double().analysis(x)
        # The learned steps really act: the coefficients are far from the plain transform's.
        assert max(float((b - p).abs().max()) for b, p in zip(bands, plain)) > 1.0
        assert float((net.synthesis(bands) - x).abs().max()) < 1e-9
        # In float32, as the codec runs: float noise only (a pixel step is 1/255).
        net32 = net.float()
        assert float((net32.synthesis(net32.analysis(x.float())) - x.float()).abs().max()) < 1e-3 / 255


def test_synthesis_norms_equal_impulse_responses():
    """Each band's norm: the RGB image (0..255 units) one unit coefficient makes, measured by
    synthesizing an impulse in the middle of a band of a 128x128 image (3 levels: the basis
    functions stay clear of the borders)."""
    levels, size = 3, 128
    net = L.LearnedWavelet(levels).double()
    shapes = [(3, size >> levels, size >> levels)] + [(9, size >> lv, size >> lv) for lv in range(levels, 0, -1)]
    zeros = [torch.zeros((1, *s), dtype=torch.float64) for s in shapes]
    expected = L.synthesis_norms(levels)
    assert [len(n) for n in expected] == [s[0] for s in shapes]
    with torch.no_grad():
        base = net.synthesis(zeros)
        for b, (channels, h, w) in enumerate(shapes):
            for ch in range(channels):
                bands = [z.clone() for z in zeros]
                bands[b][0, ch, h // 2, w // 2] = 1.0
                measured = float(((net.synthesis(bands) - base) * 255.0).norm())
                assert measured == pytest.approx(expected[b][ch], rel=1e-7), (b, ch)
