"""Canonical, length-limited Huffman codes, packed and decoded by compiled loops.

The `huffman` package builds the code (its lengths); everything after that is canonical,
so a table is fully described by 256 code lengths and both sides derive identical codes.
Decoding a variable-length code is sequential, so each stream carries sync points (the bit
offset of every SYNC_INTERVAL-th symbol): lanes a decoder may work on independently, and
every lane must end exactly where the next begins, which catches corruption early. The
loops are compiled by numba on first use (cached on disk), imported only by what codes
Huffman streams.
"""
from __future__ import annotations

import functools

import huffman
import numpy as np

from dcomp.jit import compiled

MAX_CODE_LENGTH = 12
SYNC_INTERVAL = 4096
ALPHABET = 256


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Code length per symbol (0 = unused) for the given symbol counts, at most max_length."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1  # a code needs at least one bit per symbol
        return lengths
    weights = counts[used]
    while True:
        book = huffman.codebook(zip(used.tolist(), weights.tolist()))
        longest = max(len(c) for c in book.values())
        if longest <= max_length:
            for sym, code in book.items():
                lengths[sym] = len(code)
            return lengths
        # Flattening the distribution shortens the longest codes; a little rate is lost on
        # the rarest symbols only.
        weights = (weights + 1) // 2


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (MSB-first) for the given lengths, ordered by (length, symbol)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    code, prev_len = 0, 0
    for sym in order:
        length = int(lengths[sym])
        if length == 0:
            continue
        if prev_len:
            code = (code + 1) << (length - prev_len)
        prev_len = length
        codes[sym] = code
    return codes


def kraft_ok(lengths: np.ndarray) -> bool:
    lengths = np.asarray(lengths, dtype=np.int64)
    used = lengths[lengths > 0]
    return len(used) == 0 or int(np.sum(1 << (MAX_CODE_LENGTH - used))) <= (1 << MAX_CODE_LENGTH)


def _pack(symbols, codes, lengths, out, sync):
    """Codes of the symbols MSB-first into out; sync[i] = bit offset of symbol
    (i + 1) * SYNC_INTERVAL. Returns the number of bytes written."""
    acc, held, written, bit = 0, 0, 0, 0
    for i in range(symbols.shape[0]):
        if i and i % SYNC_INTERVAL == 0:
            sync[i // SYNC_INTERVAL - 1] = bit
        s = symbols[i]
        n = lengths[s]
        acc = (acc << n) | codes[s]  # held < 8 and n <= 12: acc stays below 2**20
        held += n
        bit += n
        while held >= 8:
            held -= 8
            out[written] = (acc >> held) & 255
            written += 1
        acc &= (1 << held) - 1
    if held:
        out[written] = (acc << (8 - held)) & 255
        written += 1
    return written


# Compiled on first use (dcomp.jit): only what codes Huffman streams loads numba.
_compiled = functools.lru_cache(maxsize=None)(compiled)


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Pack symbols MSB-first; return the bytes and the bit offsets of every SYNC_INTERVAL-th symbol."""
    symbols = np.asarray(symbols, dtype=np.uint8)
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(lengths[np.flatnonzero(np.bincount(symbols, minlength=ALPHABET))] == 0):
        raise ValueError("symbol without a code")
    out = np.empty((len(symbols) * int(lengths.max(initial=0)) + 7) // 8, dtype=np.uint8)
    sync = np.empty(max(0, (len(symbols) - 1) // SYNC_INTERVAL), dtype=np.int64)
    written = _compiled(_pack)(symbols, canonical_codes(lengths).astype(np.int64), lengths, out, sync)
    return out[:written].tobytes(), sync


def decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables indexed by the next MAX_CODE_LENGTH bits: (symbol, code length)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    size = 1 << MAX_CODE_LENGTH
    sym_lut = np.zeros(size, dtype=np.uint8)
    len_lut = np.zeros(size, dtype=np.int64)  # 0 marks bit patterns that are no code
    for sym in np.flatnonzero(lengths):
        shift = MAX_CODE_LENGTH - int(lengths[sym])
        lo = int(codes[sym]) << shift
        sym_lut[lo:lo + (1 << shift)] = sym
        len_lut[lo:lo + (1 << shift)] = lengths[sym]
    return sym_lut, len_lut


class HuffmanStream:
    """One coded stream as the decoder sees it."""

    def __init__(self, data: bytes, lengths: np.ndarray, count: int, sync: np.ndarray):
        self.data, self.lengths, self.count, self.sync = data, lengths, count, sync


_TRUNCATED, _BAD_CODE, _BAD_LENGTH = 1, 2, 3
_DECODE_ERRORS = {_TRUNCATED: "stream shorter than its symbol count", _BAD_CODE: "invalid code in stream",
                  _BAD_LENGTH: "stream length does not match its symbols"}


def _decode_lanes(buf, starts, ends, last, counts, lut_base, sym_lut, len_lut, out):
    """Each lane's symbols into its row of out; 0, or what was wrong (_DECODE_ERRORS).
    buf holds 4 zero bytes past the data, so every window read stays inside it."""
    mask = (1 << MAX_CODE_LENGTH) - 1
    limit = buf.shape[0] - 3
    for lane in range(starts.shape[0]):
        pos = starts[lane]
        for k in range(counts[lane]):
            byte = pos >> 3
            if byte > limit:  # a count larger than the stream's bits: corrupt, not a crash
                return _TRUNCATED
            window = (np.int64(buf[byte]) << 16) | (np.int64(buf[byte + 1]) << 8) | np.int64(buf[byte + 2])
            idx = lut_base[lane] + ((window >> (24 - MAX_CODE_LENGTH - (pos & 7))) & mask)
            n = len_lut[idx]
            if n == 0:
                return _BAD_CODE
            out[lane, k] = sym_lut[idx]
            pos += n
        # Inner lanes must end exactly at the next sync point; a last lane only in its padding.
        if pos > ends[lane] or (pos != ends[lane] and not last[lane]) or ends[lane] - pos >= 8:
            return _BAD_LENGTH
    return 0


def decode_many(streams: list[HuffmanStream]) -> list[np.ndarray]:
    """Decode several streams at once; raise ValueError if any stream is inconsistent."""
    outputs = [np.empty(s.count, dtype=np.uint8) for s in streams]
    lane_table, lane_bit, lane_count, lane_out, lane_end, lane_last = [], [], [], [], [], []
    sym_luts, len_luts, buffers = [], [], []
    byte_base = 0
    for index, s in enumerate(streams):
        if s.count == 0:
            continue
        if not kraft_ok(s.lengths) or not np.any(s.lengths):
            raise ValueError("invalid code lengths")
        n_lanes = (s.count + SYNC_INTERVAL - 1) // SYNC_INTERVAL
        if len(s.sync) != n_lanes - 1:
            raise ValueError("sync point count does not match symbol count")
        starts = np.concatenate([[0], np.asarray(s.sync, dtype=np.int64)])
        if np.any(np.diff(starts) <= 0) or starts[-1] >= len(s.data) * 8 + 1:
            raise ValueError("sync points out of order")
        table = len(sym_luts)
        sl, ll = decode_table(s.lengths)
        sym_luts.append(sl)
        len_luts.append(ll)
        for lane in range(n_lanes):
            lane_table.append(table)
            lane_bit.append(byte_base * 8 + int(starts[lane]))
            lane_count.append(min(SYNC_INTERVAL, s.count - lane * SYNC_INTERVAL))
            lane_out.append((index, lane * SYNC_INTERVAL))
            last = lane + 1 == n_lanes
            lane_end.append(byte_base * 8 + (len(s.data) * 8 if last else int(starts[lane + 1])))
            lane_last.append(last)
        buffers.append(s.data)
        byte_base += len(s.data)
    if not lane_table:
        return outputs
    buf = np.frombuffer(b"".join(buffers) + b"\0\0\0\0", dtype=np.uint8)
    counts = np.asarray(lane_count, dtype=np.int64)
    out = np.empty((len(counts), int(counts.max())), dtype=np.uint8)
    status = _compiled(_decode_lanes)(buf, np.asarray(lane_bit, dtype=np.int64), np.asarray(lane_end, dtype=np.int64),
                                 np.asarray(lane_last), counts, np.asarray(lane_table, dtype=np.int64) << MAX_CODE_LENGTH,
                                 np.concatenate(sym_luts), np.concatenate(len_luts), out)
    if status:
        raise ValueError(_DECODE_ERRORS[status])
    for lane in range(len(counts)):
        index, start = lane_out[lane]
        outputs[index][start:start + counts[lane]] = out[lane, :counts[lane]]
    return outputs
