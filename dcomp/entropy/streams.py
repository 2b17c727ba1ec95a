"""Code several symbol streams (bytes 0..255) into one blob, each with the cheapest coder.

Huffman spends at least one bit per symbol, which is far too much on flat regions and
graphics, where nearly every residual is zero; there a general-purpose coder (zstd) over
the stream wins, and random data is stored as is. The choice is made per stream.
All Huffman code lengths are compressed together: tables of neighbouring contexts look
alike, so one zstd frame over all of them is much smaller than one per table.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zstandard

from dcomp.blas import usable_cores
from dcomp.varint import read_varint, write_varint
from dcomp.entropy import huffman

EMPTY, HUFFMAN, ZSTD, STORED = 0, 1, 2, 3
ZSTD_LEVEL = 12
# Try zstd on a stream only when Huffman is close to its 1-bit floor or the stream is short:
# elsewhere it never wins and costs encode time.
ZSTD_TRY_BITS = 1.6
READ_CHUNK = 1 << 20  # bytes of zstd output read at a time


def zstd_decompress(data: bytes, size: int) -> np.ndarray:
    """A zstd frame that must hold exactly `size` bytes, as a writable uint8 array.

    Streamed in chunks: memory follows what the frame really holds, and decoding stops one
    byte past `size`, so a frame that declares no content size (or a false one) costs no more
    than its section allows. (zstandard's one-shot API allocates its whole max_output_size up
    front, and trusts a declared size.) Bytes after the frame are ignored, as ever."""
    chunks, total = [], 0
    try:
        if zstandard.frame_content_size(data) not in (-1, size):  # -1: not declared
            raise ValueError("zstd frame size does not match its section")
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False) as reader:
            while total <= size:
                want = min(READ_CHUNK, size + 1 - total)
                chunks.append(np.frombuffer(reader.read(want), dtype=np.uint8))
                total += len(chunks[-1])
                if len(chunks[-1]) < want:  # a short read: the frame (or the data) has ended
                    break
    except zstandard.ZstdError as exc:
        raise ValueError(f"bad zstd frame ({exc})") from None
    if total != size:
        raise ValueError(f"zstd frame holds {'more' if total > size else 'fewer'} bytes than its section allows")
    return np.concatenate(chunks)


def _coded(symbols: np.ndarray) -> tuple[int, bytes, np.ndarray | None]:
    """(coder, payload, Huffman code lengths or None) of one non-empty stream, the cheapest."""
    hist = np.bincount(symbols, minlength=256)
    lengths = huffman.code_lengths(hist)
    huff_bits = int((hist * lengths).sum())
    options = [(len(symbols), STORED, symbols.tobytes(), None)]
    # Table cost estimate: about 2 bits per used symbol after joint compression.
    options.append((huff_bits / 8 + np.count_nonzero(lengths) / 4 + 2 + 3 * (len(symbols) // 4096),
                    HUFFMAN, None, lengths))
    if huff_bits < ZSTD_TRY_BITS * len(symbols) or len(symbols) < 4096:
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(symbols.tobytes())
        options.append((len(packed) + 2, ZSTD, packed, None))
    _, kind, payload, lengths = min(options, key=lambda o: o[0])
    if kind == HUFFMAN:
        data, sync = huffman.encode(symbols, lengths)
        deltas = np.diff(np.concatenate([[0], sync]))
        payload = b"".join(write_varint(int(d)) for d in deltas) + write_varint(len(data)) + data
    elif kind == ZSTD:
        payload = write_varint(len(payload)) + payload
    return kind, payload, lengths if kind == HUFFMAN else None


# Streams of more symbols than this in all are coded on every usable core (zstd and the
# Huffman packer release the GIL): each stream's choice is its own, so the bytes are the same.
THREADED_SYMBOLS = 1 << 20


def encode(streams: list[np.ndarray]) -> bytes:
    streams = [np.asarray(symbols, dtype=np.uint8) for symbols in streams]
    counts = [len(symbols) for symbols in streams]
    busy = [symbols for symbols in streams if len(symbols)]
    cores = usable_cores()
    if sum(counts) > THREADED_SYMBOLS and cores > 1:
        with ThreadPoolExecutor(cores) as pool:
            coded = iter(list(pool.map(_coded, busy)))
    else:
        coded = iter([_coded(symbols) for symbols in busy])
    kinds, payloads, all_lengths = [], [], []
    for count in counts:
        kind, payload, lengths = next(coded) if count else (EMPTY, b"", None)
        kinds.append(kind)
        payloads.append(payload)
        if lengths is not None:
            all_lengths.append(lengths)
    out = [write_varint(len(streams))]
    out += [bytes([k]) + write_varint(c) for k, c in zip(kinds, counts)]
    if all_lengths:
        table = np.stack(all_lengths).astype(np.uint8)
        # Lengths are at most 12: two per byte.
        nibbles = (table[:, 0::2] << 4) | table[:, 1::2]
        packed = zstandard.ZstdCompressor(level=19).compress(nibbles.tobytes())
        out += [write_varint(len(packed)), packed]
    return b"".join(out + payloads)


def decode(data: bytes, pos: int = 0, max_symbols: int = 1 << 40) -> tuple[list[np.ndarray], int]:
    """Inverse of encode; return the streams and the position after them. ValueError on bad
    data, including symbol counts beyond `max_symbols` in total (no huge allocations)."""
    n, pos = read_varint(data, pos, "stream table")
    if n > 4096:
        raise ValueError("too many streams")
    kinds, counts = [], []
    for _ in range(n):
        if pos >= len(data):
            raise ValueError("truncated stream table")
        kinds.append(data[pos])
        count, pos = read_varint(data, pos + 1, "stream table")
        counts.append(count)
    if sum(counts) > max_symbols:
        raise ValueError("more symbols than the image holds")
    n_huff = sum(k == HUFFMAN for k in kinds)
    tables = np.zeros((0, 256), dtype=np.uint8)
    if n_huff:
        size, pos = read_varint(data, pos, "code lengths")
        nib = zstd_decompress(data[pos:pos + size], 128 * n_huff).reshape(n_huff, 128)
        tables = np.empty((n_huff, 256), dtype=np.uint8)
        tables[:, 0::2], tables[:, 1::2] = nib >> 4, nib & 15
        pos += size
    results: list[np.ndarray | None] = [None] * n
    pending, pending_index = [], []
    for i, (kind, count) in enumerate(zip(kinds, counts)):
        if kind == EMPTY:
            if count:
                raise ValueError("empty stream with symbols")
            results[i] = np.zeros(0, dtype=np.uint8)
        elif kind == STORED:
            if pos + count > len(data):
                raise ValueError("truncated stored stream")
            results[i] = np.frombuffer(data, dtype=np.uint8, count=count, offset=pos).copy()
            pos += count
        elif kind == ZSTD:
            size, pos = read_varint(data, pos, "stream")
            results[i] = zstd_decompress(data[pos:pos + size], count)
            pos += size
        elif kind == HUFFMAN:
            sync = []
            offset = 0
            for _ in range((count - 1) // huffman.SYNC_INTERVAL):
                delta, pos = read_varint(data, pos, "sync points")
                offset += delta
                sync.append(offset)
            size, pos = read_varint(data, pos, "stream")
            if pos + size > len(data):
                raise ValueError("truncated Huffman stream")
            if 8 * size < count:  # every code is at least one bit: refused before any work
                raise ValueError("Huffman stream shorter than its symbol count")
            pending.append(huffman.HuffmanStream(data[pos:pos + size], tables[len(pending)], count,
                                                 np.asarray(sync, dtype=np.int64)))
            pending_index.append(i)
            pos += size
        else:
            raise ValueError(f"unknown stream coder {kind}")
    for i, out in zip(pending_index, huffman.decode_many(pending)):
        results[i] = out
    return results, pos  # type: ignore[return-value]
