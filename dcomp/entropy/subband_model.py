"""A context-adaptive entropy model for wavelet subbands, exact on every machine.

Each quantized coefficient is coded with a probability table chosen from integers the
decoder already has:
- its class: level, orientation (HL, LH, HH) and colour component;
- a local bin, from the coefficients of its own band decoded before it. A band is coded in
  four phases over its 2x2 lattice ((even, even), (odd, odd), (even, odd), (odd, even)), so
  each phase after the first sees decoded neighbours all around it;
- an external bin, from the parent (the same band one level coarser, 3x3 around the parent
  position), the siblings (the other orientations of the same level and colour coded before
  it) and, for the chroma components, the luma band at the same place.
Both bins are the bit length of "8 x the mean magnitude" of those neighbours, in integers:
the tables are shared by every quality, since the contexts measure magnitude in steps.

The low-pass band is coded as differences from its left (first column: upper) neighbour,
with one table per quality and colour.

Tables are discretized two-part Laplace mixtures (dcomp.entropy.laplace): training uses
their differentiable likelihood (`bits`), coding the integer frequencies made from them at
export, stored with the weights. Same verbs as the other levels: `bits`, `compress`,
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
from dcomp.entropy.laplace import PRECISION, build_tables, likelihood
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError

ORIENTATIONS, COLOURS = 3, 3
PHASES = 4
LOCAL_BINS = 8
EXTERNAL_BINS = 8
INITIAL_SCALES = (0.3, 3.0)  # a peaked and a wide part


@dataclass(frozen=True)
class SubbandLayout:
    levels: int
    qualities: int
    contexts: bool = True  # False: one table per class and quality, no contexts (the ablation)

    @property
    def detail_tables(self) -> int:
        return self.levels * ORIENTATIONS * COLOURS * 2 * LOCAL_BINS * EXTERNAL_BINS

    @property
    def tables(self) -> int:
        return self.detail_tables + self.qualities * COLOURS

    def class_base(self, depth: int, channel: int, first_phase: bool) -> int:
        """First table of a class: depth 0 is the coarsest detail level; channel = o * 3 + c."""
        return (((depth * ORIENTATIONS * COLOURS + channel) * 2 + (0 if first_phase else 1))
                * LOCAL_BINS * EXTERNAL_BINS)

    def lowpass_table(self, q: int, colour: int) -> int:
        return self.detail_tables + q * COLOURS + colour

    def band_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(channels, h, w) of LL_L, D_L, ..., D_1 for a padded image of height x width."""
        s = 1 << self.levels
        out = [(COLOURS, height // s, width // s)]
        for depth in range(self.levels):
            f = 1 << (self.levels - depth)
            out.append((ORIENTATIONS * COLOURS, height // f, width // f))
        return out


# ---------------------------------------------------------------- contexts (numpy int64 or torch float64)

def _box3(a):
    """3x3 box sum with zeros outside, exact on integer-valued arrays (..., h, w)."""
    if isinstance(a, np.ndarray):
        p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    else:
        p = F.pad(a, (1, 1, 1, 1))
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


_BIT_LENGTH_CAP = 1 << 7  # both bin counts are 8: every a >= 64 is in the last bin
_BIT_LENGTH = np.array([int(a).bit_length() for a in range(_BIT_LENGTH_CAP)], dtype=np.int64)


def _bit_length(a, bins: int):
    """0, 1, 2-3, 4-7, ... capped at bins - 1 (integer-valued, non-negative), by lookup."""
    if isinstance(a, np.ndarray):
        return np.minimum(_BIT_LENGTH[np.minimum(a, _BIT_LENGTH_CAP - 1).astype(np.int64)], bins - 1)
    lut = torch.from_numpy(_BIT_LENGTH).to(a.device)
    return lut[a.clamp(max=_BIT_LENGTH_CAP - 1).long()].clamp(max=bins - 1)


def phase_map(h: int, w: int) -> np.ndarray:
    """Phase of each position: (even, even) 0, (odd, odd) 1, (even, odd) 2, (odd, even) 3."""
    i, j = np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2
    return np.where(i == j, i, 2 + i)


# Per phase: how many of the 8 neighbours are decoded before it (away from the borders);
# 8 * sum // count is 8 x their mean magnitude.
_DECODED_NEIGHBOURS = (0, 4, 4, 8)


def local_context(mag, phase: int, phases: np.ndarray):
    """8 x the mean magnitude of the decoded neighbours, for every position as if it were in
    `phase` (the caller picks that phase's positions). mag: (..., h, w) magnitudes."""
    if phase == 0:
        return mag * 0
    before = phases < phase
    if not isinstance(mag, np.ndarray):
        before = torch.from_numpy(before).to(mag.device)
    return _box3(mag * before) * 8 // _DECODED_NEIGHBOURS[phase]


def _upsample2(a, h: int, w: int):
    if isinstance(a, np.ndarray):
        return a.repeat(2, axis=-2).repeat(2, axis=-1)[..., :h, :w]
    return a.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]


def external_context(mag_band, mag_parent, channel: int):
    """8 x mean magnitudes of the parent's 3x3, the siblings' and (chroma) the luma's 3x3,
    summed, for one channel (o * 3 + c) of a detail level.

    mag_band: (..., 9, h, w) magnitudes of the level (only channels coded before `channel`
    are read); mag_parent: (..., 9, h/2, w/2) of the coarser level, or None."""
    o, c = divmod(channel, COLOURS)
    h, w = mag_band.shape[-2:]
    out = mag_band[..., 0, :, :] * 0
    if mag_parent is not None:
        out = out + _upsample2(_box3(mag_parent[..., channel, :, :]), h, w) * 8 // 9
    if o > 0:
        sib = mag_band[..., c, :, :] if o == 1 else mag_band[..., c, :, :] + mag_band[..., COLOURS + c, :, :]
        out = out + _box3(sib) * 8 // (9 * o)
    if c > 0:
        out = out + _box3(mag_band[..., o * COLOURS, :, :]) * 8 // 9
    return out


def detail_tables(layout: SubbandLayout, depth: int, channel: int, phase: int, local, external, q=0):
    """Table index of each position (for positions of `phase`). Without contexts (an ablation,
    never written to files) the local-bin slot holds the quality index q instead."""
    base = layout.class_base(depth, channel, phase == 0)
    if not layout.contexts:
        return local * 0 + base + q * EXTERNAL_BINS
    return base + _bit_length(local, LOCAL_BINS) * EXTERNAL_BINS + _bit_length(external, EXTERNAL_BINS)


def lowpass_prediction(d: torch.Tensor) -> torch.Tensor:
    """What dc_residual subtracts, for rounded torch planes (N, 3, h, w)."""
    pred = torch.zeros_like(d)
    pred[..., :, 1:] = d[..., :, :-1]
    pred[..., 1:, 0] = d[..., :-1, 0]
    return pred


# ---------------------------------------------------------------- runs of one table

def _table_runs(tables: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Positions ordered by (table, position), and (table, start, end) of each run: encoder and
    decoder walk the same runs, each coded with one table."""
    order = np.argsort(tables, kind="stable")
    sorted_tables = tables[order]
    starts = np.flatnonzero(np.r_[True, sorted_tables[1:] != sorted_tables[:-1]])
    ends = np.r_[starts[1:], len(tables)]
    return order, [(int(sorted_tables[s]), int(s), int(e)) for s, e in zip(starts, ends)]


# ---------------------------------------------------------------- the model

class SubbandEntropyModel(nn.Module):
    """Parameters of every table, and the integer tables made from them."""

    def __init__(self, layout: SubbandLayout):
        super().__init__()
        self.layout = layout
        self.log_scales = nn.Parameter(torch.log(torch.tensor(INITIAL_SCALES)).repeat(layout.tables, 1))
        self.mix_logit = nn.Parameter(torch.zeros(layout.tables))
        self._freq: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._models: dict[int, object] = {}

    # -- training: the rate

    def table_indices(self, y: list[torch.Tensor], q: torch.Tensor) -> list[torch.Tensor]:
        """The table of every coefficient of rounded bands y ([LL, D_L, ..., D_1], each (N, C, h, w))."""
        lay = self.layout
        n = y[0].shape[0]
        ll = (lay.detail_tables + q[:, None, None, None] * COLOURS
              + torch.arange(COLOURS, device=q.device)[None, :, None, None]).expand(y[0].shape)
        out = [ll]
        mags = [b.detach().abs().to(torch.float64) for b in y]
        for depth in range(lay.levels):
            band, parent = mags[depth + 1], (mags[depth] if depth > 0 else None)
            h, w = band.shape[-2:]
            phases = phase_map(h, w)
            phase_t = torch.from_numpy(phases).to(band.device)
            idx = torch.zeros((n, ORIENTATIONS * COLOURS, h, w), dtype=torch.int64, device=band.device)
            for ch in range(ORIENTATIONS * COLOURS):
                ext = external_context(band, parent, ch)
                for p in range(PHASES):
                    t = detail_tables(lay, depth, ch, p, local_context(band[:, ch], p, phases), ext,
                                      q[:, None, None])
                    idx[:, ch] = torch.where(phase_t == p, t.to(torch.int64), idx[:, ch])
            out.append(idx)
        return out

    def bits(self, v: list[torch.Tensor], y: list[torch.Tensor], q: torch.Tensor,
             tables: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Bits per item (N,) of the values v (noisy or rounded) given their rounded values y
        (and their tables, if already known)."""
        tables = self.table_indices(y, q) if tables is None else tables
        coded = [v[0] - lowpass_prediction(y[0]).detach()] + list(v[1:])
        total = 0
        for c, t in zip(coded, tables):
            total = total + (-torch.log2(likelihood(c, self.log_scales[t], self.mix_logit[t]))).sum((1, 2, 3))
        return total

    # -- integer tables

    def export_tables(self) -> dict[str, np.ndarray]:
        freq, offsets = build_tables(self.log_scales.detach().cpu().numpy(), self.mix_logit.detach().cpu().numpy())
        return {"table_freq": freq, "table_offsets": offsets}

    def load_tables(self, freq: np.ndarray, offsets: np.ndarray, source: str) -> None:
        if len(offsets) != self.layout.tables + 1 or offsets[0] != 0 or offsets[-1] != len(freq) \
                or np.any(np.diff(offsets) < 3):
            raise WeightsError(f"weights {source} have malformed coding tables")
        self._freq, self._offsets = freq.astype(np.uint32), offsets.astype(np.int64)
        self._support = (np.diff(self._offsets) - 2) // 2
        self._cost = PRECISION - np.log2(self._freq.astype(np.float64))  # the encoder's estimates only
        self._models.clear()
        # Per class, a floor on what one coefficient costs whatever its context (ans.cost_floors
        # units): a reader checks a stream's length before it knows any context, but it knows
        # every coefficient's class.
        floors = ans.cost_floors(self._freq, self._offsets)
        lay = self.layout
        self._class_floor = floors[:lay.detail_tables].reshape(lay.levels, ORIENTATIONS * COLOURS, -1).min(-1)
        self._lowpass_floor = floors[lay.detail_tables:].reshape(lay.qualities, COLOURS)

    def table(self, index: int) -> np.ndarray:
        if self._freq is None:
            raise WeightsError("entropy model has no coding tables loaded")
        return self._freq[self._offsets[index]:self._offsets[index + 1]]

    def _model(self, index: int):
        if index not in self._models:
            import constriction
            freq = self.table(index).astype(np.float64)  # integers below 2**24: exact in float64
            self._models[index] = constriction.stream.model.Categorical(freq, perfect=False)
        return self._models[index]

    def stream_cost(self, q: int, height: int, width: int) -> int:
        """The sum of the class floors over every coefficient of a padded height x width image:
        what the shortest stream can cost (Python integers: exact)."""
        shapes = self.layout.band_shapes(height, width)
        _, h, w = shapes[0]
        cost = int(self._lowpass_floor[q].sum()) * h * w
        for depth, (_, h, w) in enumerate(shapes[1:]):
            cost += int(self._class_floor[depth].sum()) * h * w
        return cost

    # -- what coding costs, for the encoder's choices

    def coefficient_tables(self, bands: list[np.ndarray], q: int):
        """Yields (band index, channel, (h, w) tables) for every detail channel of integer bands
        (each (C, h, w)), as coding picks them; numpy, one channel's arrays at a time."""
        lay = self.layout
        for depth in range(lay.levels):
            band = bands[depth + 1]
            mag = np.abs(band)
            parent = np.abs(bands[depth]) if depth > 0 else None
            phases = phase_map(*band.shape[-2:])
            for ch in range(ORIENTATIONS * COLOURS):
                ext = external_context(mag, parent, ch)
                tables = np.empty(band.shape[-2:], dtype=np.int64)
                for p in range(PHASES):
                    where = phases == p
                    tables[where] = detail_tables(lay, depth, ch, p, local_context(mag[ch], p, phases)[where],
                                                  ext[where], q)
                yield depth + 1, ch, tables

    def code_length(self, values: np.ndarray, tables: np.ndarray) -> np.ndarray:
        """Bits of each detail coefficient under its table (escapes: the escape symbol plus
        the bytes of its value)."""
        if self._freq is None:
            raise WeightsError("entropy model has no coding tables loaded")
        start = self._offsets[tables]
        k = self._support[tables]
        outside = np.abs(values) > k
        bits = self._cost[start + np.where(outside, 2 * k + 1, values + k)]
        if outside.any():
            bits = bits + outside * 8.0 * (1 + np.log2(np.abs(values) * 2 + 1) // 7)
        return bits

    # -- coding

    def _walk(self, bands: list[np.ndarray], q: int, code_run) -> None:
        """Every run in coding order: code_run(band index, flat positions, table) fills or reads
        bands[band index] at those positions (the decoder fills them before later contexts
        read them)."""
        lay = self.layout
        for c in range(COLOURS):
            code_run(0, c, np.arange(bands[0][c].size), lay.lowpass_table(q, c))
        for depth in range(lay.levels):
            band = bands[depth + 1]
            h, w = band.shape[-2:]
            phases = phase_map(h, w).ravel()
            positions = [np.flatnonzero(phases == p) for p in range(PHASES)]
            parent = np.abs(bands[depth]) if depth > 0 else None
            for ch in range(ORIENTATIONS * COLOURS):
                mag = np.abs(band)  # refreshed: the decoder has filled earlier channels
                ext = external_context(mag, parent, ch).ravel()
                for p in range(PHASES):
                    pos = positions[p]
                    if not len(pos):
                        continue
                    local = local_context(np.abs(band[ch]), p, phases.reshape(h, w)).ravel()[pos]
                    tables = detail_tables(lay, depth, ch, p, local, ext[pos], q)
                    order, runs = _table_runs(tables)
                    for t, start, end in runs:
                        code_run(depth + 1, ch, pos[order[start:end]], t)

    def compress(self, bands: list[np.ndarray], q: int) -> bytes:
        """Integer bands [LL, D_L, ..., D_1] of quality index q -> escapes, then ANS words."""
        import constriction
        bands = [b.astype(np.int64) for b in bands]
        coded = [dc_residual(bands[0])] + bands[1:]
        runs: list[tuple[int, np.ndarray]] = []
        escapes: list[int] = []

        def collect(b: int, ch: int, pos: np.ndarray, t: int) -> None:
            values = coded[b][ch].ravel()[pos]
            k = (len(self.table(t)) - 2) // 2
            outside = np.abs(values) > k
            if outside.any():
                escapes.extend(int(v) for v in values[outside])
            runs.append((t, np.where(outside, 2 * k + 1, values + k).astype(np.int32)))

        self._walk(bands, q, collect)
        coder = constriction.stream.stack.AnsCoder()
        for t, s in reversed(runs):
            coder.encode_reverse(s, self._model(t))
        words = coder.get_compressed()
        scale = 1 << self.layout.levels
        if ans.too_short(self.stream_cost(q, bands[0].shape[1] * scale, bands[0].shape[2] * scale), len(words)):
            raise UnsupportedError("cannot code these coefficients: their stream is shorter than the format allows")
        return ans.escape_bytes(escapes) + words.astype("<u4").tobytes()

    def decompress(self, payload: bytes, q: int, height: int, width: int) -> list[np.ndarray]:
        """The inverse of compress for a padded image of height x width; CorruptFileError on
        anything inconsistent."""
        import constriction
        shapes = self.layout.band_shapes(height, width)
        total = sum(c * h * w for c, h, w in shapes)
        try:
            escapes, pos = ans.read_escapes(payload, total, "coefficients")
        except CorruptFileError as exc:
            raise CorruptFileError(f"corrupted coefficient stream ({exc})") from None
        words = payload[pos:]
        if len(words) % 4:
            raise CorruptFileError("corrupted coefficient stream (bad length)")
        if ans.too_short(self.stream_cost(q, height, width), len(words) // 4):  # before any allocation
            raise CorruptFileError(f"corrupted coefficient stream (too short for {width}x{height})")
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        except ValueError as exc:
            raise CorruptFileError(f"corrupted coefficient stream ({exc})") from None
        bands = [np.zeros(s, dtype=np.int64) for s in shapes]
        escape_iter = iter(escapes)

        def read(b: int, ch: int, pos: np.ndarray, t: int) -> None:
            k = (len(self.table(t)) - 2) // 2
            s = coder.decode(self._model(t), len(pos)).astype(np.int64) - k
            outside = np.flatnonzero(s == k + 1)
            if len(outside):
                try:
                    s[outside] = [next(escape_iter) for _ in outside]
                except StopIteration:
                    raise CorruptFileError("corrupted coefficient stream (missing escapes)") from None
            bands[b][ch].reshape(-1)[pos] = s
            if b == 0 and ch == COLOURS - 1:  # detail contexts never read LL; its values are
                bands[0][:] = dc_from_residual(bands[0])  # restored once all are in

        self._walk(bands, q, read)
        if next(escape_iter, None) is not None or not coder.is_empty():
            raise CorruptFileError("corrupted coefficient stream (data left over)")
        return bands
