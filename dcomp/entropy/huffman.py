"""Canonical, length-limited Huffman codes with vectorized packing and lane-parallel decoding.

The `huffman` package builds the code (its lengths); everything after that is canonical,
so a table is fully described by 256 code lengths and both sides derive identical codes.
Decoding a variable-length code is sequential, so each stream carries sync points (the bit
offset of every SYNC_INTERVAL-th symbol); the decoder advances all lanes of all streams
together, one numpy step per symbol index instead of one Python step per symbol.
"""
from __future__ import annotations

import huffman
import numpy as np

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


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Pack symbols MSB-first; return the bytes and the bit offsets of every SYNC_INTERVAL-th symbol."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    sym_len = lengths[symbols]
    if np.any(sym_len == 0):
        raise ValueError("symbol without a code")
    sym_code = codes[symbols]
    ends = np.cumsum(sym_len)
    starts = ends - sym_len
    total = int(ends[-1]) if len(ends) else 0
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(sym_len.max(initial=0))):
        sel = sym_len > j
        bits[starts[sel] + j] = (sym_code[sel] >> (sym_len[sel] - 1 - j)) & 1
    return np.packbits(bits).tobytes(), starts[::SYNC_INTERVAL][1:].copy()


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
    buf = np.frombuffer(b"".join(buffers) + b"\0\0\0\0", dtype=np.uint8).astype(np.int64)
    order = np.argsort(-np.asarray(lane_count), kind="stable")
    counts = np.asarray(lane_count)[order]
    pos = np.asarray(lane_bit, dtype=np.int64)[order]
    ends = np.asarray(lane_end, dtype=np.int64)[order]
    last = np.asarray(lane_last)[order]
    lut_base = np.asarray(lane_table, dtype=np.int64)[order] << MAX_CODE_LENGTH
    sym_lut = np.concatenate(sym_luts)
    len_lut = np.concatenate(len_luts)
    out = np.empty((len(order), int(counts[0])), dtype=np.uint8)
    mask = (1 << MAX_CODE_LENGTH) - 1
    active = len(order)
    limit = len(buf) - 3
    for step in range(int(counts[0])):
        while counts[active - 1] <= step:
            active -= 1
        p = pos[:active]
        byte = p >> 3
        if byte.max() > limit:  # a count larger than the stream's bits: corrupt, not a crash
            raise ValueError("stream shorter than its symbol count")
        window = (buf[byte] << 16) | (buf[byte + 1] << 8) | buf[byte + 2]
        idx = lut_base[:active] + ((window >> (24 - MAX_CODE_LENGTH - (p & 7))) & mask)
        out[:active, step] = sym_lut[idx]
        step_len = len_lut[idx]
        if not step_len.all():
            raise ValueError("invalid code in stream")
        pos[:active] = p + step_len
    # Inner lanes must end exactly at the next sync point; a last lane only in its padding.
    if np.any(pos > ends) or np.any((pos != ends) & ~last) or np.any(ends - pos >= 8):
        raise ValueError("stream length does not match its symbols")
    for row, lane in enumerate(order):
        index, start = lane_out[lane]
        outputs[index][start:start + counts[row]] = out[row, :counts[row]]
    return outputs
