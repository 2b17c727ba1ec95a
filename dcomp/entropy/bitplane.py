"""Progressive coding of integer latents as binary decisions: one stream per iteration,
parsed identically on every machine.

The latents Q (C, h, w) are integers at the finest step. They are sent coarse to fine: a
schedule (stored with the weights) gives each channel's bit plane p after every iteration,
non-increasing. After an iteration the decoder knows, of an AC channel, m = |Q| >> p and
the sign where m > 0 (an embedded dead-zone quantizer, JPEG 2000's), and of a DC channel
the floor Q >> p. Lowering a channel's plane costs binary decisions:

- AC, not yet significant (m = 0): is m' > 0; if so its sign, then m' - 1 in unary (past
  UNARY_CAP, Exp-Golomb);
- AC, significant: the next bits of |Q|, most significant first (refinement);
- DC, at its first plane: Q >> p as a difference from its left neighbour (in the first
  column, the one above), Exp-Golomb; afterwards refinement bits, whose context is how far
  the four neighbours' values pull away from the value's own.

Each decision's probability comes from integer counts kept per context; contexts are made
only of what both sides already know: the channel's frequency class (or its group), its
plane, how many of its 8 neighbours in the channel are significant and how many channels of
the same block are. Significance is decided in four phases over the 2x2 lattice of blocks,
so that later phases see their neighbours' decisions at the new plane (DC refinement in two,
a checkerboard). Counts start from trained priors and adapt after every chunk of decisions,
in integers, so the probabilities (and hence the parsing) never depend on floating point.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from dcomp.entropy.dc import dc_from_residual, dc_residual
from dcomp.errors import CorruptFileError

TOP = 24  # the plane of a channel not coded yet; |Q| stays below 2**TOP
PROB_BITS = 16
MAX_FREQ = (1 << PROB_BITS) - (1 << (PROB_BITS - 12))  # no decision is coded as surer than 1 - 2**-12
COUNT_LIMIT = 1 << 13  # counts are halved past this total: the model follows the image
CHUNK = 4096  # decisions coded between two updates of the counts
UNARY_CAP = 12
LENGTH_CAP = 24  # Exp-Golomb length prefixes
SIG_NEIGHBOURS = 5  # buckets: 0, 1, 2, 3-4, 5+ significant of the 8 neighbours
SIG_BLOCK = 6  # buckets: 0, 1, 2-3, 4-7, 8-15, 16+ significant channels in the block
SIG_PLANES = 8  # planes 0..6 apart, 7 and above together: significance depends on the step
DC_TREND = 9  # DC refinement: the neighbours' pull on the value, -4..4
# A channel's class for significance contexts: its diagonal u + v (capped at 12), luma or chroma.
# Fewer contexts than channels adapt faster within an image, and cost less than they lose.
CLASS = np.tile(np.minimum(np.add(*np.divmod(np.arange(64), 8)), 12), 3) + 13 * np.repeat([0, 1, 1], 64)
CLASSES = 26
RECONSTRUCTION_OFFSET = 0.375  # where in its interval a value is reconstructed (below the middle: values crowd towards zero)


@dataclass(frozen=True)
class ContextSpace:
    """Offsets of each kind of decision in one table of contexts."""
    groups: int

    @property
    def sig(self) -> int:
        return 0

    @property
    def sign(self) -> int:
        return self.sig + CLASSES * SIG_PLANES * SIG_NEIGHBOURS * SIG_BLOCK

    @property
    def mag(self) -> int:
        return self.sign + self.groups * 3

    @property
    def esc(self) -> int:
        return self.mag + self.groups * UNARY_CAP * 2

    @property
    def ref(self) -> int:
        return self.esc + LENGTH_CAP

    @property
    def dc_zero(self) -> int:
        return self.ref + self.groups * 2

    @property
    def dc_sign(self) -> int:
        return self.dc_zero + 3

    @property
    def dc_length(self) -> int:
        return self.dc_sign + 3

    @property
    def dc_ref(self) -> int:
        return self.dc_length + 3 * LENGTH_CAP

    @property
    def raw(self) -> int:
        return self.dc_ref + 2 * 3 * DC_TREND

    @property
    def size(self) -> int:
        return self.raw + 1


def probabilities(counts: np.ndarray) -> np.ndarray:
    """(n, 2) integer frequencies summing to 2**PROB_BITS from (n, 2) counts, as float64
    (integers below 2**53: exact)."""
    total = counts.sum(axis=1)
    f1 = (counts[:, 1] * (1 << PROB_BITS) + total // 2) // total
    f1 = np.clip(f1, (1 << PROB_BITS) - MAX_FREQ, MAX_FREQ)
    return np.stack([(1 << PROB_BITS) - f1, f1], axis=1).astype(np.float64)


class AdaptiveBits:
    """Counts per context, updated after each batch; encodes or decodes batches of bits.

    The encoder and the decoder call `code` with the same contexts in the same order; the
    encoder also passes the bits. `tally` alone (no coder) counts, to train the priors.
    """

    def __init__(self, space: ContextSpace, prior: np.ndarray | None, coder=None, decoding: bool = False):
        self.space = space
        self.counts = np.ones((space.size, 2), np.int64) if prior is None else prior.astype(np.int64).copy()
        self.counts[space.raw] = 1
        self.coder, self.decoding = coder, decoding
        self.check = 0  # CRC-32 of the decisions since the last reset, packed 8 to a byte

    def code(self, contexts: np.ndarray, bits: np.ndarray | None = None) -> np.ndarray:
        """Codes a batch in chunks of CHUNK decisions, adapting the counts after each."""
        contexts = np.asarray(contexts, np.int64).ravel()
        if bits is not None:
            bits = np.asarray(bits, np.int64).ravel()
        out = np.zeros(len(contexts), np.int64)
        for start in range(0, len(contexts), CHUNK):
            end = min(len(contexts), start + CHUNK)
            out[start:end] = self._chunk(contexts[start:end], None if bits is None else bits[start:end])
        return out

    def _chunk(self, contexts: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        if self.coder is not None:
            import constriction
            family = constriction.stream.model.Categorical(perfect=False)
            probs = probabilities(self.counts[contexts])
            if self.decoding:
                bits = self.coder.decode(family, probs).astype(np.int64)
            else:
                self.coder.encode(bits.astype(np.int32), family, probs)
        self.check = zlib.crc32(np.packbits(bits.astype(np.uint8)).tobytes(), self.check)
        np.add.at(self.counts, (contexts, bits), 1)
        self.counts[self.space.raw] = 1
        touched = contexts[self.counts[contexts].sum(axis=1) > COUNT_LIMIT]
        if len(touched):
            touched = np.unique(touched)
            self.counts[touched] = (self.counts[touched] + 1) >> 1
        return bits


def _box8(a: np.ndarray) -> np.ndarray:
    """Sum of the 8 neighbours in the last two axes, zeros outside."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] - a


def _bucket_block(n: np.ndarray) -> np.ndarray:
    return (n >= 1).astype(np.int64) + (n >= 2) + (n >= 4) + (n >= 8) + (n >= 16)


def _bucket_neighbours(n: np.ndarray) -> np.ndarray:
    return (n >= 1).astype(np.int64) + (n >= 2) + (n >= 3) + (n >= 5)


def _exp_golomb(bits: AdaptiveBits, length_contexts: np.ndarray, values: np.ndarray | None, n: int) -> np.ndarray:
    """Codes n values >= 0 as Exp-Golomb: the bit length of v + 1 in unary (contexts
    length_contexts + index, capped), then its lower bits as raw bits. Returns the values."""
    space = bits.space
    target = None if values is None else values.astype(np.int64) + 1
    lengths = np.zeros(n, np.int64)
    active = np.arange(n)
    for j in range(63):
        if len(active) == 0:
            break
        truth = None if target is None else (target[active] >> (j + 1)) > 0
        more = bits.code(length_contexts[active] + min(j, LENGTH_CAP - 1), truth)
        if j == 62 and more.any():
            raise CorruptFileError("corrupted latent stream (Exp-Golomb length out of range)")
        lengths[active[more == 0]] = j
        active = active[more == 1]
    out = np.ones(n, np.int64) << lengths
    for j in range(int(lengths.max(initial=0)) - 1, -1, -1):
        idx = np.flatnonzero(lengths > j)
        truth = None if target is None else (target[idx] >> j) & 1
        out[idx] |= bits.code(np.full(len(idx), space.raw), truth) << j
    if out.max(initial=1) > (1 << TOP):
        raise CorruptFileError("corrupted latent stream (value out of range)")
    return out - 1


class Layout:
    """The schedule and channel grouping a weights file fixes; validated on load."""

    def __init__(self, planes: np.ndarray, groups: tuple[tuple[int, ...], ...], dc_channels: tuple[int, ...]):
        planes = np.asarray(planes, np.int64)
        channels = planes.shape[1]
        if planes.ndim != 2 or planes.shape[0] < 2 or np.any(planes[0] != TOP) or np.any(planes < 0) \
                or np.any(planes > TOP) or np.any(np.diff(planes, axis=0) > 0):
            raise ValueError("malformed plane schedule")
        if channels != len(CLASS) or sorted(c for g in groups for c in g) != list(range(channels)) or not set(dc_channels) <= set(groups[0]):
            raise ValueError("malformed channel groups")
        self.planes, self.groups, self.dc_channels = planes, groups, tuple(dc_channels)
        self.group_of = np.zeros(channels, np.int64)
        for g, members in enumerate(groups):
            self.group_of[list(members)] = g
        self.space = ContextSpace(len(groups))

    @property
    def iterations(self) -> int:
        return self.planes.shape[0] - 1

    @property
    def channels(self) -> int:
        return self.planes.shape[1]

    def min_decisions(self, k: int, positions: int) -> int:
        """Decisions iteration k makes whatever the image: one per position of every channel
        coded for the first time (its significance or, for DC, its zero flag)."""
        started = (self.planes[k] < TOP) & (self.planes[k - 1] == TOP)
        return int(started.sum()) * positions


class State:
    """What the decoder knows of the latents after some iterations."""

    def __init__(self, layout: Layout, h: int, w: int):
        self.layout = layout
        self.magnitude = np.zeros((layout.channels, h, w), np.int32)  # m for AC, the floor for DC
        self.negative = np.zeros((layout.channels, h, w), bool)
        self.sig_count = np.zeros((h, w), np.int32)  # significant AC channels per block
        self.iteration = 0

    @classmethod
    def of(cls, layout: Layout, q: np.ndarray, k: int) -> "State":
        """The state after k iterations, straight from the latents (what coding reaches)."""
        s = cls(layout, *q.shape[1:])
        p = layout.planes[k][:, None, None]
        s.magnitude = (np.abs(q) >> p).astype(np.int32)
        dc = list(layout.dc_channels)
        s.magnitude[dc] = q[dc] >> p[dc]
        s.negative = q < 0
        s.magnitude[layout.planes[k] == TOP] = 0
        ac = np.ones(layout.channels, bool)
        ac[list(dc)] = False
        s.sig_count = (s.magnitude[ac] != 0).sum(axis=0, dtype=np.int32)
        s.iteration = k
        return s

    def dequantized(self) -> np.ndarray:
        """Reconstructed latents (C, h, w) float32 at the finest step's scale."""
        planes = self.layout.planes[self.iteration]
        step = np.exp2(planes.astype(np.float32))[:, None, None]
        m = self.magnitude.astype(np.float32)
        out = np.where(m > 0, (m + np.float32(RECONSTRUCTION_OFFSET)) * step - np.float32(0.5), np.float32(0))
        np.negative(out, out=out, where=self.negative)
        dc = list(self.layout.dc_channels)
        out[dc] = (m[dc] + np.float32(0.5)) * step[dc] - np.float32(0.5)
        out[planes == TOP] = 0.0
        return out


def code_iteration(state: State, bits: AdaptiveBits, q: np.ndarray | None = None) -> None:
    """Advance `state` by one iteration, coding (q given) or decoding its decisions.

    Encoder and decoder run this same function, so they make the same decisions with the
    same contexts in the same order by construction."""
    layout = state.layout
    k = state.iteration + 1
    old, new = layout.planes[k - 1], layout.planes[k]
    space = layout.space
    for g, members in enumerate(layout.groups):
        chans = np.array([c for c in members if new[c] < old[c]], np.int64)
        if len(chans) == 0:
            continue
        dc = np.array([c for c in chans if c in layout.dc_channels], np.int64)
        ac = np.array([c for c in chans if c not in layout.dc_channels], np.int64)
        if len(dc):
            _code_dc(state, bits, dc, old, new, q)
        if len(ac):
            _code_ac(state, bits, g, ac, old, new, q, space)
    state.iteration = k


def _code_dc(state: State, bits: AdaptiveBits, chans, old, new, q) -> None:
    space = bits.space
    colour = np.array([state.layout.dc_channels.index(c) for c in chans])[:, None, None]
    shape = (len(chans),) + state.magnitude.shape[1:]
    colour = np.broadcast_to(colour, shape).ravel()
    start = old[chans] == TOP
    if start.any():
        cs, col = chans[start], colour.reshape(shape)[start].ravel()
        truth = None
        if q is not None:
            truth = dc_residual(q[cs] >> new[cs][:, None, None]).ravel()
        nonzero = bits.code(space.dc_zero + col, None if truth is None else truth != 0)
        idx = np.flatnonzero(nonzero)
        negative = bits.code(space.dc_sign + col[idx], None if truth is None else truth[idx] < 0)
        mag = _exp_golomb(bits, space.dc_length + col[idx] * LENGTH_CAP, None if truth is None
                          else np.abs(truth[idx]) - 1, len(idx)) + 1
        r = np.zeros(len(col), np.int64)
        r[idx] = np.where(negative == 1, -mag, mag)
        d = dc_from_residual(r.reshape((len(cs),) + shape[1:]))
        if np.abs(d).max(initial=0) >= (1 << TOP):
            raise CorruptFileError("corrupted latent stream (DC value out of range)")
        state.magnitude[cs] = d
    later = ~start
    if later.any():
        cs = chans[later]
        col = colour.reshape(shape)[later].ravel()
        for i in range(int((old[cs] - new[cs]).max())):
            sel = (old[cs] - new[cs]) > i  # channels with an i-th refinement bit
            c2 = cs[sel]
            d = state.magnitude[c2].astype(np.int64)
            colours = col.reshape((len(cs),) + shape[1:])[sel]
            shift = (old[c2] - 1 - i)[:, None, None]
            truth = None if q is None else (q[c2] >> shift) & 1
            odd = np.broadcast_to((np.add.outer(np.arange(d.shape[1]), np.arange(d.shape[2])) & 1).astype(bool),
                                  d.shape)
            # Even positions: the pull of the four neighbours at the previous plane. Odd ones:
            # their four neighbours (all even) are refined by then, so the pull is measured at
            # the new plane, against the middle of the value's interval.
            trend = _neighbour_sum(d) - 4 * d
            b_even = bits.code((space.dc_ref + colours * DC_TREND + _trend_bucket(trend))[~odd],
                               None if truth is None else truth[~odd])
            refined = d << 1
            refined[~odd] |= b_even
            trend = _neighbour_sum(refined) - 4 * refined - 2
            b_odd = bits.code((space.dc_ref + (3 + colours) * DC_TREND + _trend_bucket(trend))[odd],
                              None if truth is None else truth[odd])
            refined[odd] |= b_odd
            state.magnitude[c2] = refined


def _trend_bucket(t: np.ndarray) -> np.ndarray:
    return np.clip(t, -(DC_TREND // 2), DC_TREND // 2) + DC_TREND // 2


def _neighbour_sum(d: np.ndarray) -> np.ndarray:
    """Sum of the 4 neighbours in the last two axes, the value itself standing in outside."""
    p = np.pad(d, [(0, 0)] * (d.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def _code_ac(state: State, bits: AdaptiveBits, g: int, chans, old, new, q, space: ContextSpace) -> None:
    n, (h, w) = len(chans), state.magnitude.shape[1:]
    m_old = state.magnitude[chans]
    sig = m_old > 0
    block = _bucket_block(state.sig_count)[None]
    plane = np.minimum(new[chans], SIG_PLANES - 1)[:, None, None]
    classes = CLASS[chans][:, None, None]
    absq = None if q is None else np.abs(q[chans])
    p_new = new[chans][:, None, None]
    m_true = None if absq is None else absq >> p_new

    # significance of the positions not significant yet, in four phases over the 2x2 lattice
    yy, xx = np.meshgrid(np.arange(h) & 1, np.arange(w) & 1, indexing="ij")
    now = sig.copy()
    found = []
    for phase in ((yy == 0) & (xx == 0), (yy == 1) & (xx == 1), (yy == 0) & (xx == 1), (yy == 1) & (xx == 0)):
        where = np.flatnonzero((~sig & phase[None]).ravel())
        if len(where) == 0:
            continue
        neighbours = _bucket_neighbours(_box8(now.astype(np.int64)))
        ctx = space.sig + ((classes * SIG_PLANES + plane) * SIG_NEIGHBOURS + neighbours) * SIG_BLOCK + block
        truth = None if m_true is None else (m_true.ravel()[where] > 0)
        hits = where[bits.code(ctx.ravel()[where], truth) == 1]
        now.ravel()[hits] = True
        found.append(hits)
    became = np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
    state.sig_count += (now.sum(axis=0, dtype=np.int32) - sig.sum(axis=0, dtype=np.int32))
    # their signs, with the left neighbour's sign as context
    neg = state.negative[chans]
    left = np.zeros((n, h, w), np.int64)
    left[:, :, 1:] = np.where(sig[:, :, :-1], 1 + neg[:, :, :-1], 0)
    truth = None if q is None else (q[chans].ravel()[became] < 0)
    negative = bits.code(space.sign + g * 3 + left.ravel()[became], truth)
    # their magnitudes, m - 1 in unary then Exp-Golomb
    near = (_box8(now.astype(np.int64)).ravel()[became] > 0).astype(np.int64)
    extra = np.zeros(len(became), np.int64)
    target = None if m_true is None else m_true.ravel()[became] - 1
    active = np.arange(len(became))
    for j in range(UNARY_CAP):
        if len(active) == 0:
            break
        t = None if target is None else target[active] > j
        more = bits.code(space.mag + (g * UNARY_CAP + j) * 2 + near[active], t)
        extra[active[more == 1]] += 1
        active = active[more == 1]
    if len(active):
        esc = _exp_golomb(bits, np.full(len(active), space.esc), None if target is None
                          else target[active] - UNARY_CAP, len(active))
        extra[active] += esc
    m_new = m_old.ravel().copy()
    m_new[became] = 1 + extra
    neg_flat = neg.ravel().copy()
    neg_flat[became] = negative == 1
    # refinement bits of the positions already significant
    where1 = np.flatnonzero(sig.ravel())
    d = np.broadcast_to((old[chans] - new[chans])[:, None, None], (n, h, w)).ravel()[where1]
    first = (m_old.ravel()[where1] == 1).astype(np.int64)
    base = space.ref + g * 2
    for i in range(int(d.max(initial=0))):
        sel = np.flatnonzero(d > i)
        pos = where1[sel]
        truth = None
        if absq is not None:
            shift = np.broadcast_to((old[chans] - 1 - i)[:, None, None], (n, h, w)).ravel()[pos]
            truth = (absq.ravel()[pos] >> shift) & 1
        b = bits.code(base + (1 - first[sel]) * (i == 0) + (i > 0), truth)
        m_new[pos] = (m_new[pos] << 1) | b
    if m_new.max(initial=0) >= (1 << TOP):
        raise CorruptFileError("corrupted latent stream (value out of range)")
    state.magnitude[chans] = m_new.reshape(n, h, w)
    state.negative[chans] = neg_flat.reshape(n, h, w)


# ---------------------------------------------------------------- streams

CHECK_BYTES = 2  # each payload starts with the low bytes of the CRC-32 of its decisions


def encode_iterations(layout: Layout, prior: np.ndarray | None, q: np.ndarray, iterations: int) -> list[bytes]:
    """Integer latents (C, h, w) to one payload per iteration: a check of the decisions
    (CHECK_BYTES, little-endian), then the range coder's 32-bit words.

    The check lets a decoder whose probabilities differ from the encoder's (other priors, a
    crafted payload whose CRC was recomputed) fail with an error instead of a wrong image."""
    import constriction
    if np.abs(q).max(initial=0) >= (1 << TOP):
        raise ValueError("latents out of range")
    state = State(layout, *q.shape[1:])
    bits = AdaptiveBits(layout.space, prior)
    out = []
    for _ in range(iterations):
        bits.coder, bits.check = constriction.stream.queue.RangeEncoder(), 0
        code_iteration(state, bits, q)
        check = (bits.check & ((1 << 8 * CHECK_BYTES) - 1)).to_bytes(CHECK_BYTES, "little")
        out.append(check + bits.coder.get_compressed().astype("<u4").tobytes())
    return out


def decode_iterations(layout: Layout, prior: np.ndarray | None, payloads: list[bytes], h: int, w: int,
                      on_iteration=None) -> State:
    """The state after decoding each payload in turn (`on_iteration(state)` called after each);
    CorruptFileError on inconsistent data."""
    import constriction
    if not 1 <= len(payloads) <= layout.iterations:
        raise CorruptFileError(f"{len(payloads)} iterations: this model codes 1..{layout.iterations}")
    for k, payload in enumerate(payloads, 1):  # before anything of the image's size exists
        floor_bits = layout.min_decisions(k, h * w) * ((1 << PROB_BITS) - MAX_FREQ) / (1 << PROB_BITS)
        if len(payload) < CHECK_BYTES or (len(payload) - CHECK_BYTES) % 4 \
                or (len(payload) - CHECK_BYTES) * 8 + 64 < floor_bits:
            raise CorruptFileError(f"corrupted iteration {k} (too short for {h}x{w} blocks)")
    state = State(layout, h, w)
    bits = AdaptiveBits(layout.space, prior, decoding=True)
    for k, payload in enumerate(payloads, 1):
        try:
            words = np.frombuffer(payload, "<u4", offset=CHECK_BYTES).astype(np.uint32)
            bits.coder, bits.check = constriction.stream.queue.RangeDecoder(words), 0
            code_iteration(state, bits)
        except (ValueError, RuntimeError, AssertionError) as exc:  # constriction asserts on invalid data
            raise CorruptFileError(f"corrupted iteration {k} ({exc})") from None
        if not bits.coder.maybe_exhausted():
            raise CorruptFileError(f"corrupted iteration {k} (data left over)")
        if (bits.check & ((1 << 8 * CHECK_BYTES) - 1)).to_bytes(CHECK_BYTES, "little") != payload[:CHECK_BYTES]:
            raise CorruptFileError(f"corrupted iteration {k} (its decisions fail their check: "
                                   "corrupted, or made with another model)")
        if on_iteration is not None:
            on_iteration(state)
    return state
