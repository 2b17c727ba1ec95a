"""Compiled loops of the `mlp` predictive mode: the decoder's wavefront walk and the encoder's
matching pass over every interior pixel.

numba compiles them on first use (about 4 s for the encoder's, 4 s for the decoder's, on one
core) and caches the machine code on disk, keyed by this file's contents and the CPU (see
dcomp.jit, also for where nothing can be cached).

The loops release the GIL and run on every usable core from Python threads: the encoder's on
slices of the samples, the decoder's one coded channel per thread, each channel a block of
wavefronts behind the one before it (`_ChannelPipeline`). (numba's own parallel loops need a
threading layer: OpenMP hangs in a process forked after using it, and workqueue aborts when
two threads call in at once; a batch worker or a bench pool may do either.)

Exactness: as in `mlp_predictor` (normative, and the reference the tests compare these loops
with), every operand is an integer held in float64 and every partial sum stays below 2**52
(bounds checked when weights and heads load). So sums are exact in any order, with or
without fused multiply-adds, and the compiler is free to vectorize them (`reassoc`,
`contract`): the result cannot depend on the machine. Contexts and energies are int64.
"""
from __future__ import annotations

import threading
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from dcomp.blas import usable_cores
from dcomp.jit import compiled
from dcomp.methods import mlp_predictor as P

STREAM_EXHAUSTED = 1  # the decoder's status: a context needed more symbols than its stream holds
# Safe for exact integer arithmetic (module docstring); nothing that assumes NaNs or
# approximates a function.
_FASTMATH = {"reassoc", "contract"}


def _jit(function):
    return compiled(function, fastmath=_FASTMATH)


@dataclass
class ChannelModel:
    """One coded channel's predictor as flat arrays: where its inputs are, the network and
    one or more heads (the encoder scores several candidates in one pass).

    A head is acc = const + ca . a2 + cx . x, offset = floor(acc * scale): the trained head
    (cx = 0), the per-image network head and the linear head (ca = 0) all have this form."""
    offs: np.ndarray      # (n_in,) int64 flat offsets of the inputs' samples
    groups: np.ndarray    # (n_in,) int64 which MED reference each input subtracts
    med: np.ndarray       # (3, groups) int64 inputs holding each group's W, N, NW
    grad: np.ndarray      # (3, 2) int64 input pairs of the activity |W - NW| + |N - NW| + |NE - N|
    eoffs: np.ndarray     # (m,) int64 flat offsets of the residuals in the energy
    eweights: np.ndarray  # (m,) int64 their weights
    eextra: np.ndarray    # (2,) int64 the energy's activity weight and constant
    w1: np.ndarray        # (hidden 1, n_in) float64
    b1: np.ndarray
    scale1: float         # 2**-(s1 - ACT_BITS)
    w2: np.ndarray        # (hidden 2, hidden 1) float64
    b2: np.ndarray
    scale2: float
    ca: np.ndarray        # (heads, hidden 2) float64
    cx: np.ndarray        # (heads, n_in) float64
    const: np.ndarray     # (heads,) float64, the rounding half included
    scale: np.ndarray     # (heads,) float64, 2**-shift
    hidden: bool          # False: no head reads the network (the linear ablation)

def channel_model(net: P.IntegerNet, channel: int, priors: list[int], pw: int, plane: int,
                  heads: list[tuple[np.ndarray, np.ndarray, int, int]], hidden: bool,
                  energy_weights: np.ndarray) -> ChannelModel:
    """`heads`: (coefficients over a2, coefficients over x, integer constant, shift) each;
    `energy_weights` as `mlp_predictor.context_energy` takes them."""
    offs, groups, w_i, n_i, nw_i = P.input_layout(channel, tuple(priors), pw, plane)
    eoffs, _ = P.energy_layout(channel, tuple(priors), pw, plane)
    n_nb = len(P.ENERGY_NEIGHBOURS)
    ew = np.asarray(energy_weights, np.int64)
    index = {nb: i for i, nb in enumerate(P.NEIGHBOURS)}
    grad = np.array([[index[a], index[b]] for a, b in P.GRADIENT_PAIRS], dtype=np.int64)
    n_hidden, n_in = len(net.b2), len(offs)
    as_float = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return ChannelModel(
        offs, groups.astype(np.int64), np.stack([w_i, n_i, nw_i]).astype(np.int64), grad,
        eoffs, np.concatenate([ew[:n_nb], ew[n_nb + 1:-1]]), np.array([ew[n_nb], ew[-1]]),
        as_float(net.w1), net.b1f, 2.0 ** -(net.s1 - P.ACT_BITS), as_float(net.w2), net.b2f, 2.0 ** -net.s2,
        np.array([as_float(ca).reshape(n_hidden) for ca, _, _, _ in heads]),
        np.array([as_float(cx).reshape(n_in) for _, cx, _, _ in heads]),
        np.array([float(int(c) + (1 << (s - 1))) for _, _, c, s in heads]),
        np.array([2.0 ** -s for _, _, _, s in heads]), hidden)


# Every coded channel's model, each array stacked over channels and zero-padded to the largest
# (counts[c] = inputs, MED groups, energy residuals, heads of channel c): one type for every
# image, so numba compiles (and caches) each loop once.
Packed = namedtuple("Packed", ["offs", "groups", "med", "grad", "eoffs", "eweights", "eextra", "w1", "b1", "scale1",
                               "w2", "b2", "scale2", "ca", "cx", "const", "scale", "counts", "hidden"])
_INTEGER_FIELDS = ("offs", "groups", "med", "grad", "eoffs", "eweights", "eextra")


def pack(models: list[ChannelModel]) -> Packed:
    def stacked(name):
        dtype = np.int64 if name in _INTEGER_FIELDS else np.float64
        arrays = [np.asarray(getattr(m, name), dtype) for m in models]
        shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
        out = np.zeros((len(arrays),) + shape, dtype)
        for i, a in enumerate(arrays):
            out[(i,) + tuple(slice(0, k) for k in a.shape)] = a
        return out

    counts = np.array([[len(m.offs), m.med.shape[1], len(m.eoffs), len(m.const)] for m in models], np.int64)
    return Packed(*(stacked(name) for name in Packed._fields[:-2]), counts, bool(models[0].hidden))


# The loops below keep the pixel index innermost, so each row operation is one long
# vectorizable loop; `_dense` reads four inputs per pass over its output row, which keeps
# loads and stores below the multiply-adds.
@_jit
def _dense(w, b, scale, src, n_in, dst, n):
    """dst[j, :n] = floor(relu(b[j] + sum_i w[j, i] src[i, :n]) * scale) (w, b of one channel)."""
    n_out = w.shape[0]
    j = 0
    while j < n_out:
        two = j + 1 < n_out
        ra, rb = dst[j], dst[j + 1 if two else j]
        ba, bb = b[j], b[j + 1] if two else 0.0
        for p in range(n):
            ra[p] = ba
        if two:
            for p in range(n):
                rb[p] = bb
        i = 0
        while i + 4 <= n_in:
            s0, s1, s2, s3 = src[i], src[i + 1], src[i + 2], src[i + 3]
            a0, a1, a2, a3 = w[j, i], w[j, i + 1], w[j, i + 2], w[j, i + 3]
            if two:
                c0, c1, c2, c3 = w[j + 1, i], w[j + 1, i + 1], w[j + 1, i + 2], w[j + 1, i + 3]
                for p in range(n):
                    v0, v1, v2, v3 = s0[p], s1[p], s2[p], s3[p]
                    ra[p] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                    rb[p] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
            else:
                for p in range(n):
                    ra[p] += a0 * s0[p] + a1 * s1[p] + a2 * s2[p] + a3 * s3[p]
            i += 4
        while i < n_in:
            si, a0 = src[i], w[j, i]
            c0 = w[j + 1, i] if two else 0.0
            for p in range(n):
                ra[p] += a0 * si[p]
            if two:
                for p in range(n):
                    rb[p] += c0 * si[p]
            i += 1
        for p in range(n):
            ra[p] = np.floor(max(ra[p], 0.0) * scale)
        if two:
            for p in range(n):
                rb[p] = np.floor(max(rb[p], 0.0) * scale)
        j += 2


@_jit
def _scratch(model, n):
    """Per-pixel rows (pixels last) for batches of up to n samples."""
    return (np.empty((model.offs.shape[1], n)), np.empty((model.med.shape[2], n)), np.empty((model.w1.shape[1], n)),
            np.empty((model.w2.shape[1], n)), np.empty(n), np.empty((model.const.shape[1], n)), np.empty(n))


@_jit
def _predict(vals, pos, n, c, model, scratch):
    """Predictions of every head of channel c (pred[h, :n]) and the activity
    (energy[:n]) of the samples at flat positions pos[:n]."""
    offs, groups, med, grad, ca, cx, const, scale = (model.offs, model.groups, model.med, model.grad, model.ca,
                                                     model.cx, model.const, model.scale)
    x, refs, a1, a2, acc, pred, energy = scratch
    n_in, n_groups, heads = model.counts[c, 0], model.counts[c, 1], model.counts[c, 3]
    for i in range(n_in):
        xi, o = x[i], offs[c, i]
        for p in range(n):
            xi[p] = vals[pos[p] + o]
    for p in range(n):
        energy[p] = 0.0
    for k in range(3):
        xa, xb = x[grad[c, k, 0]], x[grad[c, k, 1]]
        for p in range(n):
            energy[p] += abs(xa[p] - xb[p])
    for g in range(n_groups):
        xw, xn, xnw, ref = x[med[c, 0, g]], x[med[c, 1, g]], x[med[c, 2, g]], refs[g]
        for p in range(n):
            ref[p] = min(max(xw[p] + xn[p] - xnw[p], min(xw[p], xn[p])), max(xw[p], xn[p]))
    for i in range(n_in):
        xi, ref = x[i], refs[groups[c, i]]
        for p in range(n):
            xi[p] -= ref[p]
    if model.hidden:
        _dense(model.w1[c], model.b1[c], model.scale1[c], x, n_in, a1, n)
        _dense(model.w2[c], model.b2[c], model.scale2[c], a1, a1.shape[0], a2, n)
    ref0 = refs[0]
    for h in range(heads):
        for p in range(n):
            acc[p] = const[c, h]
        if model.hidden:
            for j in range(a2.shape[0]):
                cj, aj = ca[c, h, j], a2[j]
                for p in range(n):
                    acc[p] += cj * aj[p]
        for i in range(n_in):
            ci, xi = cx[c, h, i], x[i]
            for p in range(n):
                acc[p] += ci * xi[p]
        out, sc = pred[h], scale[c, h]
        for p in range(n):
            out[p] = min(max(ref0[p] + np.floor(acc[p] * sc), 0.0), 255.0)


# Pixels per batch: the scratch rows (inputs, activations) stay in the L2 cache. (A 4000-pixel
# wide image's wavefronts of ~1500 samples in one batch made decoding 3.5x slower per sample.)
ENCODE_BLOCK = 512
DECODE_BLOCK = 256


@_jit
def _encode_pass(vals, flat, first, stop, own, model, res_out, grad_out):
    """Residuals of every head (res_out[h, i]) and the activity of each interior
    sample at flat[i], first <= i < stop, of the one channel in `model`, whose plane
    starts at `own`."""
    scratch = _scratch(model, ENCODE_BLOCK)
    pred, energy = scratch[5], scratch[6]
    pos = np.empty(ENCODE_BLOCK, np.int64)
    for start in range(first, stop, ENCODE_BLOCK):
        n = min(ENCODE_BLOCK, stop - start)
        for p in range(n):
            pos[p] = flat[start + p]
        _predict(vals, pos, n, 0, model, scratch)
        for p in range(n):
            grad_out[start + p] = np.int32(energy[p])
            actual = vals[own + pos[p]]
            for h in range(res_out.shape[0]):
                res_out[h, start + p] = ((actual - np.int64(pred[h, p]) + 128) & 255) - 128


@_jit
def _energies(res, flat, first, stop, activity, eoffs, eweights, eextra, out):
    for i in range(first, stop):
        e = eextra[0] * np.int64(activity[i]) + eextra[1]
        for k in range(eoffs.shape[0]):
            e += eweights[k] * abs(res[flat[i] + eoffs[k]])
        out[i] = max(e, 0)


@_jit
def _joint_histogram(energy, symbols, clip, out):
    for i in range(energy.shape[0]):
        out[min(energy[i], clip), symbols[i]] += 1


def joint_histogram(energy: np.ndarray, symbols: np.ndarray, clip: int) -> np.ndarray:
    """(clip + 1, 256) int64: how often each symbol (uint8) occurs with each energy, energies
    above clip counted at clip."""
    out = np.zeros((clip + 1, 256), np.int64)
    _joint_histogram(energy, symbols, clip, out)
    return out


@_jit
def _residual_histogram(res, out):
    for i in range(res.shape[0]):
        r = np.int64(res[i])
        out[2 * r if r >= 0 else -2 * r - 1] += 1


def residual_histogram(res: np.ndarray) -> np.ndarray:
    """(256,) int64: how often each symbol occurs among the residuals (-128..127, int16) as
    mlp.zigzag maps them."""
    out = np.zeros(256, np.int64)
    _residual_histogram(res, out)
    return out


@_jit
def _by_context(symbols, energy, decode_order, lut, out, counts):
    for i in range(decode_order.shape[0]):
        counts[lut[energy[decode_order[i]]]] += 1
    start = np.zeros(counts.shape[0], np.int64)
    for k in range(1, counts.shape[0]):
        start[k] = start[k - 1] + counts[k - 1]
    for i in range(decode_order.shape[0]):
        j = decode_order[i]
        k = lut[energy[j]]
        out[start[k]] = symbols[j]
        start[k] += 1


def streams_by_context(symbols: np.ndarray, energy: np.ndarray, decode_order: np.ndarray, lut: np.ndarray
                       ) -> list[np.ndarray]:
    """The symbols (uint8) split by context lut[energy] into one stream per context, each in
    decoding order: a counting sort, one pass to count and one to place."""
    out = np.empty(len(symbols), np.uint8)
    counts = np.zeros(int(lut.max(initial=0)) + 1, np.int64)
    _by_context(symbols, energy, decode_order, lut, out, counts)
    return np.split(out, np.cumsum(counts)[:-1])


@_jit
def _front_positions(t, row0, heights, width, pw, pos, last):
    """Flat positions of wavefront t's interior samples, band by band, y ascending, whether
    each is in the last column; their count."""
    n = 0
    for b in range(row0.shape[0]):
        y_lo = max(1, -((width - 1 - t) // 2))
        y_hi = min(heights[b] - 1, (t - 1) // 2)
        for y in range(y_lo, y_hi + 1):
            pos[n] = (row0[b] + y) * pw + t - 2 * y + P.PAD_LEFT
            last[n] = t - 2 * y == width - 1
            n += 1
    return n


@_jit
def _take_symbols(vals, res, pos, last, n, c, own, model, scratch, th, pool, ptr, end):
    """Each sample's context from its energy, its symbol from that context's stream, and
    the sample and residual written back (also into the right padding, for the last column)."""
    eoffs, eweights, eextra = model.eoffs, model.eweights, model.eextra
    pred, activity = scratch[5][0], scratch[6]
    stream0 = c * (th.shape[1] + 1)
    for p in range(n):
        e = eextra[c, 0] * np.int64(activity[p]) + eextra[c, 1]
        for k in range(model.counts[c, 2]):
            e += eweights[c, k] * abs(res[pos[p] + eoffs[c, k]])
        e = max(e, 0)
        context = 0  # how many thresholds are <= e: counted without branches, which mispredict
        for k in range(th.shape[1]):
            context += th[c, k] <= e
        s = stream0 + context
        if ptr[s] == end[s]:
            return STREAM_EXHAUSTED
        sym = np.int64(pool[ptr[s]])
        ptr[s] += 1
        r = -(sym >> 1) - 1 if sym & 1 else sym >> 1
        at = own + pos[p]
        vals[at] = (np.int64(pred[p]) + r) & 255
        res[at] = r
        if last[p]:
            vals[at + 1] = vals[at]
            res[at + 1] = r
    return 0


@_jit
def _decode_fronts(vals, res, row0, heights, width, pw, plane, order, th, pool, ptr, end, model, c, t0, t1):
    """Coded channel c's interior samples of wavefronts t0 <= t < t1."""
    cap = max(1, heights.sum())
    scratch = _scratch(model, min(cap, DECODE_BLOCK))
    pos = np.empty(cap, np.int64)
    last = np.empty(cap, np.bool_)
    for t in range(t0, t1):
        n = _front_positions(t, row0, heights, width, pw, pos, last)
        for start in range(0, n, DECODE_BLOCK):  # in order: the symbols' order within the wavefront
            m = min(DECODE_BLOCK, n - start)
            block = pos[start:start + m]
            _predict(vals, block, m, c, model, scratch)
            if _take_symbols(vals, res, block, last[start:start + m], m, c, order[c] * plane, model, scratch, th,
                             pool, ptr, end):
                return STREAM_EXHAUSTED
    return 0


# Wavefronts per call of the decoder's loop: the channels' threads hand each other blocks of
# this many (a thread waits at most one block for the channel before it).
FRONT_BLOCK = 32


class _ChannelPipeline:
    """The coded channels decoded on threads, channel c at most up to where channel c - 1 has
    finished. Equivalent to decoding each wavefront channel by channel: every channel has its
    own streams, and a sample reads the channels before it only at its own pixel and in
    wavefronts already decoded."""

    def __init__(self, channels: int, blocks: int):
        self.done = [0] * channels  # blocks finished, per channel
        self.failed = False
        self.blocks = blocks
        self.changed = threading.Condition()

    def run(self, c: int, decode_block) -> None:
        for j in range(self.blocks):
            with self.changed:
                self.changed.wait_for(lambda: self.failed or c == 0 or self.done[c - 1] > j)
                if self.failed:
                    return
            ok = False
            try:
                ok = decode_block(c, j) == 0
            finally:  # also when it raises: the channels waiting on this one must not wait forever
                with self.changed:
                    self.failed |= not ok
                    self.done[c] = j + 1
                    self.changed.notify_all()
# Fewer samples than this per thread: one thread (starting threads would cost more).
THREAD_MIN_SAMPLES = 1 << 16


def _on_every_core(kernel, n: int, *args) -> None:
    """kernel(values, flat, first, stop, *rest) for args = (values, flat, *rest), over the
    n samples of flat cut into one contiguous slice [first, stop) per usable core; every sample's output depends only on the inputs, so the result
    is the same however it is cut."""
    parts = max(1, min(usable_cores(), n // THREAD_MIN_SAMPLES))
    cuts = [n * i // parts for i in range(parts + 1)]
    head, rest = args[:2], args[2:]
    if parts == 1:
        kernel(*head, 0, n, *rest)
        return
    with ThreadPoolExecutor(parts) as pool:
        for done in [pool.submit(kernel, *head, a, b, *rest) for a, b in zip(cuts[:-1], cuts[1:])]:
            done.result()


def encode_pass(stack: np.ndarray, flat: np.ndarray, channel: int, model: ChannelModel
                ) -> tuple[np.ndarray, np.ndarray]:
    """(residuals per head: (heads, n) int16, activity: (n,) int32) of the interior
    samples at `flat` of `channel`, in the order given."""
    res = np.empty((len(model.const), len(flat)), np.int16)
    grad = np.empty(len(flat), np.int32)
    _on_every_core(_encode_pass, len(flat), stack.reshape(-1), flat, channel * stack[0].size, pack([model]), res, grad)
    return res, grad


def energies(res: np.ndarray, flat: np.ndarray, activity: np.ndarray, model: ChannelModel) -> np.ndarray:
    """The context energy of the samples at `flat`, from the padded residual stack `res` and
    their activity: `mlp_predictor.context_energy` with the model's weights. int32: the
    encoder's weights (below 2**15) keep it below 2**27."""
    out = np.empty(len(flat), np.int32)
    _on_every_core(_energies, len(flat), res.reshape(-1), flat, activity, model.eoffs, model.eweights, model.eextra,
                   out)
    return out


def decode_wavefronts(stack: np.ndarray, res: np.ndarray, width: int, row0: np.ndarray, heights: list[int],
                      order: list[int], thresholds: np.ndarray, pool: np.ndarray, starts: np.ndarray,
                      ends: np.ndarray, models: list[ChannelModel]) -> bool:
    """Decode every interior sample into the padded `stack` (and its residuals into `res`),
    both (C, H', W') int32, in place. `thresholds` is (coded channels, K - 1); `pool` holds
    all streams' symbols, stream c * K + k from starts[.] to ends[.]. False if a context ran
    out of symbols or one was left over."""
    ptr = starts.astype(np.int64)
    end = ends.astype(np.int64)
    heights = np.asarray(heights, np.int64)
    args = (stack.reshape(-1), res.reshape(-1), row0.astype(np.int64), heights, width, stack.shape[2], stack[0].size,
            np.asarray(order, np.int64), thresholds.astype(np.int64), pool, ptr, end, pack(models))
    first, stop = 3, (width - 1) + 2 * (int(heights.max()) - 1) + 1  # t = x + 2y over x, y >= 1
    blocks = max(0, -(-(stop - first) // FRONT_BLOCK))

    def decode_block(c: int, j: int) -> int:
        return _decode_fronts(*args, c, first + j * FRONT_BLOCK, min(stop, first + (j + 1) * FRONT_BLOCK))

    channels = len(order)
    if usable_cores() == 1 or channels == 1 or int(heights.sum()) * width < THREAD_MIN_SAMPLES:
        ok = all(decode_block(c, j) == 0 for c in range(channels) for j in range(blocks))
    else:
        pipeline = _ChannelPipeline(channels, blocks)
        with ThreadPoolExecutor(channels) as pool_:
            for done in [pool_.submit(pipeline.run, c, decode_block) for c in range(channels)]:
                done.result()
        ok = not pipeline.failed
    return ok and bool(np.all(ptr == end))
