"""A context-adaptive entropy model for block latents, exact on every machine.

The latent channels of each block are coded in groups. A symbol's probability table is
chosen by (quality, channel, bin), where the bin is log2 of an integer "activity" of the
groups already decoded around its block, so encoder and decoder compute the same bins with
integer arithmetic. Each table is a discretized two-part Laplace mixture: training uses its
differentiable likelihood (`bits`); coding uses integer frequencies made from it once, at
export (`export_tables`), and stored with the weights, so parsing never depends on floats.
DC channels are coded as differences from their left (first column: upper) neighbour.

The same three verbs at this level as at the method's: `bits` for training, `compress`,
`decompress`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcomp.entropy import ans
from dcomp.entropy.dc import dc_from_residual, dc_residual
from dcomp.entropy.laplace import build_tables, likelihood
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError

INITIAL_SCALES = (0.3, 3.0)  # a peaked and a wide part: near-zero and outlying latents


@dataclass(frozen=True)
class ContextLayout:
    """What the model is parameterized by: coding groups, DC channels, bins, qualities, channels."""
    groups: tuple[tuple[int, ...], ...]  # channel indices of each coding group, in coding order
    dc_channels: tuple[int, ...]  # coded as neighbour differences; their activity starts the context
    bins: int
    qualities: int
    channels: int

    def table_index(self, q: int, channel: int, bin_: int) -> int:
        return (q * self.channels + channel) * self.bins + bin_

    @property
    def tables(self) -> int:
        return self.qualities * self.channels * self.bins


# ---------------------------------------------------------------- contexts (numpy or torch)

def _pad(a):
    """A zero border on the last two axes, for numpy arrays and torch tensors alike."""
    if isinstance(a, np.ndarray):
        return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    return F.pad(a, (1, 1, 1, 1))


def _box3(a):
    """3x3 box sum with zeros outside, exact on integer-valued arrays (..., h, w)."""
    p = _pad(a)
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _bins_from_activity(activity, bins: int):
    """Bin = bit length of the activity, capped: 0, 1, 2-3, 4-7, ..."""
    a = activity.clip(max=(1 << (bins - 1)) - 1)
    out = a * 0
    for k in range(bins - 1):
        out = out + (a >= (1 << k))
    return out


def _dc_activity(y, dc: list[int]):
    """Sum over DC channels of |right - here| + |below - here|."""
    d = y[..., dc, :, :]
    out = d[..., 0, :, :] * 0
    out[..., :, :-1] += abs(d[..., :, 1:] - d[..., :, :-1]).sum(axis=-3)
    out[..., :-1, :] += abs(d[..., 1:, :] - d[..., :-1, :]).sum(axis=-3)
    return out


def group_bins(layout: ContextLayout, y):
    """Yields each coding group's (..., h, w) bins in turn, each computed from y as it stands
    when asked: the decoder fills in a group (and turns DC residuals into values) before it
    asks for the next one's. y: integer-valued latents (..., C, h, w), numpy int64 or torch
    float64 (whose sums of these integers are exact)."""
    dc = list(layout.dc_channels)
    yield y[..., 0, :, :] * 0  # the first group (DC) has one bin
    running = _dc_activity(y, dc)
    for previous in layout.groups[:-1]:
        ac = [c for c in previous if c not in layout.dc_channels]
        if ac:
            running = running + abs(y[..., ac, :, :]).sum(axis=-3)
        yield _bins_from_activity(_box3(running), layout.bins)


def _dc_prediction(d: torch.Tensor) -> torch.Tensor:
    """What dc_residual subtracts, for rounded torch latents (N, k, h, w)."""
    pred = torch.zeros_like(d)
    pred[..., :, 1:] = d[..., :, :-1]
    pred[..., 1:, 0] = d[..., :-1, 0]
    return pred


def _bin_spans(bins: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Raster positions ordered by (bin, position), and (bin, start, end) of each non-empty
    bin in that order: the runs of one table each, as encoder and decoder both walk them."""
    flat = bins.ravel()
    counts = np.bincount(flat, minlength=n_bins)
    ends = np.cumsum(counts)
    return np.argsort(flat, kind="stable"), [(b, int(ends[b] - n), int(ends[b])) for b, n in enumerate(counts) if n]


# ---------------------------------------------------------------- the model

class ContextEntropyModel(nn.Module):
    """Parameters of every (quality, channel, bin) table, and the integer tables made from them."""

    def __init__(self, layout: ContextLayout):
        super().__init__()
        self.layout = layout
        self.log_scales = nn.Parameter(torch.log(torch.tensor(INITIAL_SCALES)).repeat(
            layout.qualities, layout.channels, layout.bins, 1))
        self.mix_logit = nn.Parameter(torch.zeros(layout.qualities, layout.channels, layout.bins))
        self._freq: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._coding_models: dict[int, object] = {}

    # -- training: the rate

    def channel_bins(self, y_int: torch.Tensor) -> torch.Tensor:
        """The bin of every latent, (N, C, h, w), from rounded latents (no gradient)."""
        a = y_int.detach().to(torch.float64)
        out = torch.zeros(a.shape, dtype=torch.int64, device=a.device)
        for group, bins in zip(self.layout.groups, group_bins(self.layout, a)):
            out[:, list(group)] = bins.to(torch.int64)[:, None]
        return out

    def bits(self, v: torch.Tensor, y_int: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Bits of each latent, (N, C, h, w): v are the values being coded (noisy or rounded),
        y_int their rounded values, from which contexts and the DC prediction come; q (N,)."""
        bins = self.channel_bins(y_int)
        dc = list(self.layout.dc_channels)
        coded = v.clone()
        coded[:, dc] = v[:, dc] - _dc_prediction(y_int[:, dc]).detach()
        n, c, h, w = v.shape
        qi = q[:, None, None, None].expand(n, c, h, w)
        ci = torch.arange(c, device=v.device)[None, :, None, None].expand(n, c, h, w)
        return -torch.log2(likelihood(coded, self.log_scales[qi, ci, bins], self.mix_logit[qi, ci, bins]))

    # -- integer tables

    def export_tables(self) -> dict[str, np.ndarray]:
        """The integer frequency tables of the current parameters, to store with the weights."""
        freq, offsets = build_tables(self.log_scales.detach().cpu().numpy(), self.mix_logit.detach().cpu().numpy())
        return {"table_freq": freq, "table_offsets": offsets}

    def load_tables(self, freq: np.ndarray, offsets: np.ndarray, source: str) -> None:
        if len(offsets) != self.layout.tables + 1 or offsets[0] != 0 or offsets[-1] != len(freq) \
                or np.any(np.diff(offsets) < 3):
            raise WeightsError(f"weights {source} have malformed coding tables")
        self._freq, self._offsets = freq.astype(np.uint32), offsets.astype(np.int64)
        self._coding_models.clear()
        # Per quality, a floor on what one position's symbols cost (ans.cost_floors units): over
        # the channels, each one's smallest floor over the bins (a reader checks a stream's
        # length before it knows any bin).
        floors = ans.cost_floors(self._freq, self._offsets).reshape(
            self.layout.qualities, self.layout.channels, self.layout.bins)
        self.position_cost = [int(v) for v in floors.min(axis=2).sum(axis=1)]

    def too_short(self, q: int, positions: int, n_words: int) -> bool:
        return ans.too_short(positions * self.position_cost[q], n_words)

    def table(self, index: int) -> np.ndarray:
        if self._freq is None:
            raise WeightsError("entropy model has no coding tables loaded")
        return self._freq[self._offsets[index]:self._offsets[index + 1]]

    def _coding_model(self, index: int):
        """constriction model of table `index`, from its exact integer frequencies."""
        if index not in self._coding_models:
            import constriction
            freq = self.table(index).astype(np.float64)  # integers below 2**24: exact in float64
            self._coding_models[index] = constriction.stream.model.Categorical(freq, perfect=False)
        return self._coding_models[index]

    # -- coding

    def compress(self, y: np.ndarray, q: int) -> bytes:
        """Integer latents (C, h, w) of quality index q to one payload: escapes, then ANS words.

        Symbols are coded group by group, within a group channel by channel and bin by bin,
        each run of symbols with one table: the decoder knows every run's table and length
        before it reads it.
        """
        import constriction
        layout = self.layout
        y = y.astype(np.int64)
        coded = y.copy()
        dc = list(layout.dc_channels)
        coded[dc] = dc_residual(y[dc])
        runs: list[tuple[int, np.ndarray]] = []
        for group, bins in zip(layout.groups, group_bins(layout, y)):
            order, spans = _bin_spans(bins, layout.bins)
            for c in group:
                values = coded[c].ravel()[order]
                runs.extend((layout.table_index(q, c, b), values[start:end]) for b, start, end in spans)
        escapes: list[int] = []
        symbols = []
        for t, values in runs:
            k = (len(self.table(t)) - 2) // 2
            s = values + k
            outside = np.abs(values) > k
            if outside.any():
                escapes.extend(int(v) for v in values[outside])
                s = np.where(outside, 2 * k + 1, s)
            symbols.append(s.astype(np.int32))
        coder = constriction.stream.stack.AnsCoder()
        for (t, _), s in zip(reversed(runs), reversed(symbols)):
            coder.encode_reverse(s, self._coding_model(t))
        words = coder.get_compressed()
        if self.too_short(q, y.shape[1] * y.shape[2], len(words)):
            # Only if nearly every latent is its table's least likely value -K, the symbol that
            # costs nothing in an empty coder: the reader would refuse the file, so never write it.
            raise UnsupportedError("cannot code these latents: their stream is shorter than the format allows")
        return ans.escape_bytes(escapes) + words.astype("<u4").tobytes()

    def decompress(self, payload: bytes, q: int, h: int, w: int) -> np.ndarray:
        """The inverse of compress; CorruptFileError on anything inconsistent."""
        import constriction
        layout = self.layout
        try:
            escapes, pos = ans.read_escapes(payload)
            n_escapes = len(escapes)
        except CorruptFileError as exc:
            raise CorruptFileError(f"corrupted latent stream ({exc})") from None
        words = payload[pos:]
        if len(words) % 4 or n_escapes > layout.channels * h * w:
            raise CorruptFileError("corrupted latent stream (bad length)")
        if self.too_short(q, h * w, len(words) // 4):  # before anything of the image's size exists
            raise CorruptFileError(f"corrupted latent stream (too short for {h}x{w} blocks)")
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        except ValueError as exc:
            raise CorruptFileError(f"corrupted latent stream ({exc})") from None
        y = np.zeros((layout.channels, h, w), dtype=np.int64)
        escape_iter = iter(escapes)
        bins_by_group = group_bins(layout, y)
        dc = list(layout.dc_channels)
        for g, group in enumerate(layout.groups):
            if g == 1:  # the later groups' contexts read the DC values, not their residuals
                y[dc] = dc_from_residual(y[dc])
            order, spans = _bin_spans(next(bins_by_group), layout.bins)
            for c in group:
                values = np.empty(h * w, dtype=np.int64)
                for b, start, end in spans:
                    t = layout.table_index(q, c, b)
                    k = (len(self.table(t)) - 2) // 2
                    s = coder.decode(self._coding_model(t), end - start).astype(np.int64) - k
                    outside = np.flatnonzero(s == k + 1)
                    if len(outside):
                        try:
                            s[outside] = [next(escape_iter) for _ in outside]
                        except StopIteration:
                            raise CorruptFileError("corrupted latent stream (missing escapes)") from None
                    values[order[start:end]] = s
                y[c] = values.reshape(h, w)
        if next(escape_iter, None) is not None or not coder.is_empty():
            raise CorruptFileError("corrupted latent stream (data left over)")
        return y
