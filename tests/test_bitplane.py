"""The progressive binary coder of cnn-rnn-ae (dcomp.entropy.bitplane), on its own."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcomp.entropy import bitplane as B
from dcomp.errors import CorruptFileError
from dcomp.methods.block_ae import DC_CHANNELS, channel_groups
from dcomp.methods.cnn_rnn_ae import dequantize

C = 192


def _layout(iterations: int = 6) -> B.Layout:
    """A schedule as training makes them: DC first, higher frequencies later, planes falling."""
    planes = np.full((iterations + 1, C), B.TOP, np.int64)
    freq = np.tile(np.add(*np.divmod(np.arange(64), 8)), 3)
    for k in range(1, iterations + 1):
        start = freq <= 3 * k  # more channels each iteration
        planes[k] = np.where(start, np.maximum(0, 7 - k + freq // 5), B.TOP)
    planes[:, list(DC_CHANNELS)] = np.r_[B.TOP, np.arange(6, 6 - iterations, -1).clip(0)][:, None]
    return B.Layout(np.minimum.accumulate(planes, axis=0), channel_groups(), DC_CHANNELS)


def _latents(h: int = 9, w: int = 11, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 60.0 / (1 + np.tile(np.arange(64), 3))[:, None, None]
    q = np.round(rng.laplace(0, 1, (C, h, w)) * scale).astype(np.int64)
    q[list(DC_CHANNELS)] = rng.integers(-900, 900, (3, h, w)).cumsum(axis=2) // 4
    return q


def test_every_prefix_decodes_to_the_state_its_iterations_reach():
    layout, q = _layout(), _latents()
    payloads = B.encode_iterations(layout, None, q, layout.iterations)
    for k in range(1, layout.iterations + 1):
        state = B.decode_iterations(layout, None, payloads[:k], *q.shape[1:])
        assert np.array_equal(state.dequantized(), B.State.of(layout, q, k).dequantized()), k
    # the last plane of this schedule is 0 everywhere it is coded: exact
    final = B.State.of(layout, q, layout.iterations)
    coded = layout.planes[-1] == 0
    assert np.array_equal(final.dequantized()[coded], q[coded].astype(np.float32))


def test_encoding_fewer_iterations_writes_the_same_first_payloads():
    layout, q = _layout(), _latents(seed=3)
    all_of_them = B.encode_iterations(layout, None, q, layout.iterations)
    assert B.encode_iterations(layout, None, q, 3) == all_of_them[:3]


def test_training_dequantization_equals_the_decoder_state():
    layout, q = _layout(), _latents(seed=4)
    for k in (1, 3, layout.iterations):
        expected = B.State.of(layout, q, k).dequantized()
        got = dequantize(torch.from_numpy(q)[None], layout.planes, k)[0].numpy()
        assert np.array_equal(got, expected), k


class _Recording(B.AdaptiveBits):
    """Records each chunk's contexts and integer probabilities."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace = []

    def _chunk(self, contexts, bits):
        self.trace.append((contexts.copy(), B.probabilities(self.counts[contexts])))
        return super()._chunk(contexts, bits)


def test_encoder_and_decoder_use_identical_probabilities(monkeypatch):
    layout, q = _layout(), _latents(seed=5)
    prior = np.random.default_rng(0).integers(1, 50, (layout.space.size, 2))
    made = []

    def recording(*args, **kwargs):
        made.append(_Recording(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(B, "AdaptiveBits", recording)
    payloads = B.encode_iterations(layout, prior, q, layout.iterations)
    B.decode_iterations(layout, prior, payloads, *q.shape[1:])
    encoder, decoder = made
    assert len(encoder.trace) == len(decoder.trace) > 10
    for (c1, p1), (c2, p2) in zip(encoder.trace, decoder.trace):
        assert np.array_equal(c1, c2) and np.array_equal(p1, p2)
        assert np.all(p1 == np.round(p1)) and np.all(p1.sum(axis=1) == 1 << B.PROB_BITS)


def test_a_decoder_with_other_probabilities_fails_its_check():
    layout, q = _layout(), _latents(seed=6)
    prior = np.full((layout.space.size, 2), 4)
    payloads = B.encode_iterations(layout, prior, q, layout.iterations)
    other = prior.copy()
    other[layout.space.sig:layout.space.sign, 1] = 40  # a crafted mismatch of the significance model
    with pytest.raises(CorruptFileError, match="check|left over|corrupted"):
        B.decode_iterations(layout, other, payloads, *q.shape[1:])


def test_flipped_payload_bits_give_an_error_not_a_wrong_state():
    layout, q = _layout(), _latents(seed=7)
    payloads = B.encode_iterations(layout, None, q, layout.iterations)
    rng = np.random.default_rng(1)
    caught = 0
    for trial in range(20):
        k = int(rng.integers(1, layout.iterations))
        if len(payloads[k]) <= B.CHECK_BYTES:
            continue
        bad = bytearray(payloads[k])
        bad[int(rng.integers(B.CHECK_BYTES, len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            B.decode_iterations(layout, None, payloads[:k] + [bytes(bad)] + payloads[k + 1:], *q.shape[1:])
        except CorruptFileError:
            caught += 1
    assert caught >= 18  # the 16-bit check misses one in 65536


def test_a_short_payload_for_a_large_grid_is_refused_before_decoding(monkeypatch):
    layout = _layout()
    monkeypatch.setattr(B, "State", None)  # nothing of the grid's size may be made
    with pytest.raises(CorruptFileError, match="too short"):
        B.decode_iterations(layout, None, [b"\0\0" + b"\0" * 8], 4096, 4096)


@pytest.mark.parametrize("change", ["rising", "not-top-first", "negative", "groups"])
def test_malformed_layouts_are_refused(change):
    planes = _layout().planes.copy()
    groups = channel_groups()
    if change == "rising":
        planes[3, 5] = planes[2, 5] + 1
    elif change == "not-top-first":
        planes[0, 0] = 3
    elif change == "negative":
        planes[-1, 7] = -1
    else:
        groups = groups[:-1]
    with pytest.raises(ValueError):
        B.Layout(planes, groups, DC_CHANNELS)


def test_probabilities_are_integers_within_bounds():
    counts = np.array([[1, 1], [1, 10 ** 6], [10 ** 6, 1], [3, 5]])
    p = B.probabilities(counts)
    assert np.all(p.sum(axis=1) == 1 << B.PROB_BITS)
    assert p.min() >= (1 << B.PROB_BITS) - B.MAX_FREQ and p.max() <= B.MAX_FREQ
