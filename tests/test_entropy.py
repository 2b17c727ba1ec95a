"""Entropy coding: length-limited canonical Huffman with lane-parallel decoding, and the
multi-stream coder that picks empty / Huffman / zstd / stored per stream."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcomp.varint import read_varint, write_varint
from dcomp.entropy import huffman, streams
from dcomp.entropy.huffman import MAX_CODE_LENGTH, SYNC_INTERVAL, HuffmanStream
from dcomp.errors import CorruptFileError

# Where the decoder reads a varint, the container's reader raises CorruptFileError (a DcompError
# the mlp decoder passes on unchanged); every other inconsistency is a ValueError.
BAD_DATA = (ValueError, CorruptFileError)


def kraft_sum(lengths: np.ndarray) -> float:
    used = lengths[lengths > 0].astype(np.int64)
    return float(np.sum(2.0 ** -used))


# ---------------------------------------------------------------- code lengths

def geometric_counts(ratio: float, n: int = 256, top: float = 2.0**60) -> np.ndarray:
    return np.maximum(1, np.round(top * ratio ** np.arange(n))).astype(np.int64)


def fibonacci_counts(n: int) -> np.ndarray:
    fib = [1, 1]
    while len(fib) < n:
        fib.append(fib[-1] + fib[-2])
    return np.array(fib[:n], dtype=np.int64)


@pytest.mark.parametrize("counts", [
    geometric_counts(0.5), geometric_counts(0.25), geometric_counts(0.9), geometric_counts(0.01),
    fibonacci_counts(80), np.concatenate([[1 << 62], np.ones(255, np.int64)]),
    np.concatenate([[10**12, 10**12], np.ones(254, np.int64)]),
], ids=["geo0.5", "geo0.25", "geo0.9", "geo0.01", "fibonacci", "one-huge", "two-huge"])
def test_code_lengths_respect_max_length(counts):
    lengths = huffman.code_lengths(counts)
    used = np.flatnonzero(counts)
    assert lengths.max() <= MAX_CODE_LENGTH
    assert np.all(lengths[used] >= 1)
    assert np.all(lengths[counts == 0] == 0)
    assert kraft_sum(lengths) <= 1.0 and huffman.kraft_ok(lengths)
    # The most frequent symbol gets the shortest code.
    assert lengths[np.argmax(counts)] == lengths[used].min()


@pytest.mark.parametrize("max_length", [8, 9, 10])
def test_code_lengths_custom_limit(max_length):
    lengths = huffman.code_lengths(geometric_counts(0.5), max_length)
    assert lengths.max() <= max_length and kraft_sum(lengths) <= 1.0


def test_code_lengths_small_cases():
    assert not huffman.code_lengths(np.zeros(256, np.int64)).any()
    one = np.zeros(256, np.int64)
    one[200] = 77
    lengths = huffman.code_lengths(one)
    assert lengths[200] == 1 and np.count_nonzero(lengths) == 1
    two = np.zeros(256, np.int64)
    two[[3, 250]] = [1, 10**9]
    assert huffman.code_lengths(two)[[3, 250]].tolist() == [1, 1]
    assert set(huffman.code_lengths(np.ones(256, np.int64)).tolist()) == {8}


def test_canonical_codes_are_prefix_free():
    lengths = huffman.code_lengths(geometric_counts(0.7))
    codes = huffman.canonical_codes(lengths)
    words = sorted(format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths) if n)
    assert len(set(words)) == len(words)
    for a, b in zip(words, words[1:]):
        assert not b.startswith(a)


# ---------------------------------------------------------------- Huffman streams

def sample(dist: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dist == "single":
        return np.full(n, 7 + seed % 200, dtype=np.uint8)
    if dist == "two":
        return np.where(rng.random(n) < 0.3, 0, 255).astype(np.uint8)
    if dist == "uniform":
        return rng.integers(0, 256, n).astype(np.uint8)
    if dist == "skewed":  # almost all zeros, rare symbols up to 255
        out = np.zeros(n, dtype=np.uint8)
        rare = rng.random(n) < 0.002
        out[rare] = rng.integers(1, 256, int(rare.sum()))
        return out
    if dist == "geometric":
        return np.minimum(rng.geometric(0.15, n) - 1, 255).astype(np.uint8)
    raise ValueError(dist)


def huffman_stream(symbols: np.ndarray) -> HuffmanStream:
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
    data, sync = huffman.encode(symbols, lengths)
    assert len(sync) == max(0, (len(symbols) - 1) // SYNC_INTERVAL)
    return HuffmanStream(data, lengths, len(symbols), sync)


@pytest.mark.parametrize("dist", ["single", "two", "uniform", "skewed", "geometric"])
@pytest.mark.parametrize("n", [1, 2, 100, SYNC_INTERVAL, SYNC_INTERVAL + 1, 3 * SYNC_INTERVAL + 17])
def test_huffman_round_trip(dist, n):
    symbols = sample(dist, n, seed=n)
    stream = huffman_stream(symbols)
    (out,) = huffman.decode_many([stream])
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)
    # Size: within one bit per symbol of the empirical entropy, plus the padding byte.
    counts = np.bincount(symbols, minlength=256)
    p = counts[counts > 0] / n
    entropy_bits = float(-(p * np.log2(p)).sum() * n)
    assert len(stream.data) * 8 <= entropy_bits + n + 8


@pytest.mark.parametrize("dist", ["two", "skewed", "geometric"])
def test_huffman_packing_equals_the_bit_string_of_its_codes(dist):
    symbols = sample(dist, 2 * SYNC_INTERVAL + 5, seed=7)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
    codes = huffman.canonical_codes(lengths)
    bits = "".join(format(int(codes[s]), f"0{int(lengths[s])}b") for s in symbols)
    data, sync = huffman.encode(symbols, lengths)
    assert data == int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")
    offsets = np.cumsum(lengths[symbols].astype(np.int64)) - lengths[symbols]
    assert sync.tolist() == offsets[SYNC_INTERVAL::SYNC_INTERVAL].tolist()


def test_huffman_several_streams_at_once():
    inputs = [sample("geometric", 5 * SYNC_INTERVAL + 3, 1), sample("single", 9000, 2), np.zeros(0, np.uint8),
              sample("uniform", 1, 3), sample("skewed", SYNC_INTERVAL, 4), sample("two", 2 * SYNC_INTERVAL, 5),
              sample("uniform", 777, 6)]
    coded = []
    for symbols in inputs:
        if len(symbols):
            coded.append(huffman_stream(symbols))
        else:
            coded.append(HuffmanStream(b"", np.zeros(256, np.uint8), 0, np.zeros(0, np.int64)))
    outputs = huffman.decode_many(coded)
    assert len(outputs) == len(inputs)
    for symbols, out in zip(inputs, outputs):
        assert np.array_equal(out, symbols)
    assert huffman.decode_many([]) == []


def test_huffman_encode_refuses_symbol_without_code():
    lengths = huffman.code_lengths(np.bincount([1, 1, 2], minlength=256))
    with pytest.raises(ValueError):
        huffman.encode(np.array([1, 3]), lengths)


def test_huffman_decode_rejects_bad_tables_and_sync_points():
    symbols = sample("geometric", 2 * SYNC_INTERVAL + 5, 8)
    good = huffman_stream(symbols)
    over_full = good.lengths.copy()
    over_full[over_full > 0] = 1  # Kraft sum > 1
    cases = [
        HuffmanStream(good.data, over_full, good.count, good.sync),
        HuffmanStream(good.data, np.zeros(256, np.uint8), good.count, good.sync),
        HuffmanStream(good.data, good.lengths, good.count, good.sync[:1]),  # too few sync points
        HuffmanStream(good.data, good.lengths, good.count, good.sync[::-1].copy()),  # out of order
        HuffmanStream(good.data, good.lengths, good.count, good.sync + 3),  # lanes do not meet
        HuffmanStream(good.data, good.lengths, good.count, np.array([len(good.data) * 8 + 9, len(good.data) * 8 + 20])),
        HuffmanStream(good.data + b"\0\0", good.lengths, good.count, good.sync),  # trailing bytes
    ]
    for i, stream in enumerate(cases):
        with pytest.raises(ValueError):
            huffman.decode_many([stream])
        with pytest.raises(ValueError):  # also when decoded together with a good stream
            huffman.decode_many([good, stream])



@pytest.mark.parametrize("count", [110, 150, 1000, SYNC_INTERVAL])
def test_huffman_decode_rejects_count_larger_than_data(count):
    """A symbol count well beyond what the stream holds (say, a corrupted count field).

    (A count a symbol or two too large can pass: the zero padding bits of the last byte may
    spell the all-zero code. Only the image-level total in the mlp decoder catches that.)"""
    symbols = sample("geometric", 100, 9)
    good = huffman_stream(symbols)
    with pytest.raises(ValueError):
        huffman.decode_many([HuffmanStream(good.data, good.lengths, count, good.sync)])


def test_huffman_flipped_bits_raise_value_error_or_decode():
    symbols = sample("geometric", 2 * SYNC_INTERVAL + 100, 10)
    good = huffman_stream(symbols)
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(good.data), 12, replace=False):
        data = bytearray(good.data)
        data[pos] ^= 1 << int(rng.integers(8))
        try:
            (out,) = huffman.decode_many([HuffmanStream(bytes(data), good.lengths, good.count, good.sync)])
        except ValueError:
            continue
        assert len(out) == len(symbols)


# ---------------------------------------------------------------- the multi-stream coder

def stream_kinds(blob: bytes, pos: int = 0) -> list[int]:
    n, pos = read_varint(blob, pos)
    kinds = []
    for _ in range(n):
        kinds.append(blob[pos])
        _, pos = read_varint(blob, pos + 1)
    return kinds


def mixed_streams(seed: int = 0) -> list[np.ndarray]:
    return [
        np.zeros(0, np.uint8),                        # empty
        np.zeros(6000, np.uint8),                     # zstd: far below Huffman's 1 bit per symbol
        sample("uniform", 400, seed + 1),             # stored: incompressible
        sample("geometric", 3 * SYNC_INTERVAL + 5, seed + 2),  # Huffman, several lanes
        sample("geometric", 5000, seed + 3),          # Huffman
        np.tile(np.arange(50, dtype=np.uint8), 60),   # zstd: repetitive
        np.zeros(0, np.uint8),
    ]


def test_streams_round_trip_mixed_coders():
    inputs = mixed_streams()
    blob = streams.encode(inputs)
    kinds = stream_kinds(blob)
    assert set(kinds) == {streams.EMPTY, streams.ZSTD, streams.STORED, streams.HUFFMAN}, kinds
    prefix, suffix = b"\x01\x02\x03", b"trailing"
    outputs, pos = streams.decode(prefix + blob + suffix, len(prefix))
    assert pos == len(prefix) + len(blob)
    assert len(outputs) == len(inputs)
    for symbols, out in zip(inputs, outputs):
        assert out.dtype == np.uint8 and np.array_equal(out, symbols)


def test_streams_no_streams_and_all_empty():
    for inputs in ([], [np.zeros(0, np.uint8)] * 5):
        blob = streams.encode(inputs)
        outputs, pos = streams.decode(blob)
        assert pos == len(blob) and len(outputs) == len(inputs)
        assert all(len(o) == 0 for o in outputs)


STREAM_DISTS = st.sampled_from(["single", "two", "uniform", "skewed", "geometric", "empty"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(st.tuples(STREAM_DISTS, st.integers(1, 2 * SYNC_INTERVAL + 50), st.integers(0, 1000)),
                     min_size=1, max_size=6))
def test_streams_round_trip_property(spec):
    inputs = [np.zeros(0, np.uint8) if d == "empty" else sample(d, n, s) for d, n, s in spec]
    blob = streams.encode(inputs)
    outputs, pos = streams.decode(blob)
    assert pos == len(blob)
    for symbols, out in zip(inputs, outputs):
        assert np.array_equal(out, symbols)


@pytest.fixture(scope="module")
def small_blob() -> tuple[list[np.ndarray], bytes]:
    inputs = [np.zeros(0, np.uint8), np.zeros(700, np.uint8), sample("uniform", 300, 1),
              sample("geometric", 1200, 2), sample("skewed", SYNC_INTERVAL + 10, 3)]
    blob = streams.encode(inputs)
    assert {streams.EMPTY, streams.ZSTD, streams.STORED, streams.HUFFMAN} <= set(stream_kinds(blob))
    return inputs, blob


def test_streams_truncated_everywhere(small_blob):
    _, blob = small_blob
    for n in range(len(blob)):
        with pytest.raises(BAD_DATA):
            streams.decode(blob[:n])


def test_streams_corrupted_bytes(small_blob):
    """Flipped bytes: a ValueError (or, in a varint, CorruptFileError), never IndexError & co."""
    inputs, blob = small_blob
    rng = np.random.default_rng(1)
    head = list(range(min(len(blob), 48)))  # the table: counts, kinds, code lengths
    body = rng.choice(np.arange(48, len(blob)), 16, replace=False).tolist()
    for pos in head + body:
        for mask in (0x01, 0xFF) if pos >= 48 else (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[pos] ^= mask
            try:
                outputs, _ = streams.decode(bytes(bad))
            except BAD_DATA:
                continue
            assert len(outputs) == len(inputs)


def _blob_with_count(blob: bytes, index: int, new_count: int) -> bytes:
    """The same streams with stream `index`'s symbol count field replaced."""
    n, pos = read_varint(blob, 0)
    out = bytearray(blob[:pos])
    for i in range(n):
        kind = blob[pos]
        count, nxt = read_varint(blob, pos + 1)
        out += bytes([kind]) + write_varint(new_count if i == index else count)
        pos = nxt
    return bytes(out) + blob[pos:]


@pytest.mark.parametrize("delta", [128, 10_000, -100, -9000])
def test_streams_wrong_symbol_count(delta):
    symbols = sample("geometric", 9000, 4)
    blob = streams.encode([symbols])
    assert stream_kinds(blob) == [streams.HUFFMAN]
    with pytest.raises(BAD_DATA):
        streams.decode(_blob_with_count(blob, 0, len(symbols) + delta))


def test_streams_huge_counts_do_not_allocate():
    blob = streams.encode([sample("geometric", 500, 5), np.zeros(3000, np.uint8)])
    for index in (0, 1):
        for count in ((1 << 35) - 1, 1 << 31, 10**9):
            with pytest.raises(BAD_DATA):
                streams.decode(_blob_with_count(blob, index, count))


def test_streams_zstd_frame_declaring_huge_size():
    import struct

    import zstandard

    frame = zstandard.ZstdCompressor(level=3).compress(b"\0" * 3000)
    assert frame[4] == 0x60  # single segment, 2-byte content size: rewrite as an 8-byte size
    for declared in (1 << 33, 1 << 45, (1 << 64) - 2):
        bad = frame[:4] + bytes([0xE0]) + struct.pack("<Q", declared) + frame[6:]
        blob = write_varint(1) + bytes([streams.ZSTD]) + write_varint(3000) + write_varint(len(bad)) + bad
        with pytest.raises(ValueError):
            streams.decode(blob)


def test_streams_unknown_coder_and_too_many_streams():
    blob = write_varint(1) + bytes([9]) + write_varint(3) + b"abc"
    with pytest.raises(ValueError, match="unknown stream coder"):
        streams.decode(blob)
    with pytest.raises(ValueError):
        streams.decode(write_varint(5000))
    with pytest.raises(ValueError):
        streams.decode(write_varint(1) + bytes([streams.EMPTY]) + write_varint(4))  # empty with symbols


# ---------------------------------------------------------------- zstd frames, streamed

def _frame(raw: bytes, content_size: bool) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19, write_content_size=content_size).compress(raw)


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_decompress_exact_size_only(content_size):
    raw = bytes(range(256)) * 50
    frame = _frame(raw, content_size)
    out = streams.zstd_decompress(frame, len(raw))
    assert out.tobytes() == raw and out.flags.writeable
    assert streams.zstd_decompress(frame + b"trailing", len(raw)).tobytes() == raw  # ignored, as ever
    for size, match in ((len(raw) - 1, "more bytes|does not match"), (len(raw) + 1, "fewer bytes|does not match")):
        with pytest.raises(ValueError, match=match):
            streams.zstd_decompress(frame, size)
    with pytest.raises(ValueError):
        streams.zstd_decompress(frame[:-5], len(raw))
    assert streams.zstd_decompress(_frame(b"", content_size), 0).size == 0


def test_zstd_frame_without_content_size_stops_past_the_limit():
    """A frame that declares no size and holds 256 MB: refused one byte past the limit, with
    memory for the limit only (zstandard's one-shot API would allocate max_output_size)."""
    import time
    import tracemalloc

    import zstandard

    compressor = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    zeros = bytes(1 << 20)
    frame = b"".join([compressor.compress(zeros) for _ in range(256)] + [compressor.flush()])
    assert len(frame) < 100_000 and zstandard.frame_content_size(frame) == -1
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="more bytes"):
            streams.zstd_decompress(frame, 3 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1 and peak < 8 << 20


def test_huffman_stream_shorter_than_one_bit_a_symbol_is_refused_up_front():
    blob = streams.encode([sample("geometric", 300, 3)])  # no sync points up to SYNC_INTERVAL symbols
    assert stream_kinds(blob) == [streams.HUFFMAN] and len(blob) < SYNC_INTERVAL // 8
    with pytest.raises(ValueError, match="shorter than its symbol count"):
        streams.decode(_blob_with_count(blob, 0, SYNC_INTERVAL))


# ---------------------------------------------------------------- the ANS length bound

def test_ans_cost_floor_holds_for_every_frequency():
    """The step formats/SPEC.md's length bound rests on: rANS encoding a symbol of frequency f
    from a state x = a f + r (a >= 8 once x >= 2**27; r < f) multiplies it by at least
    (a 2**24 + f - 1) / ((a + 1) f), counting a renormalization's loss, and that is at least
    2**((2**24 - f) / 2**24). Checked for every f at the smallest a (the ratio grows with a)."""
    from dcomp.entropy import ans

    one = 1 << ans.PRECISION
    f = np.arange(1, one, dtype=np.float64)
    a = 8.0
    gain = np.log1p((a * one + f - 1 - (a + 1) * f) / ((a + 1) * f)) / np.log(2)
    assert (gain - (one - f) / one).min() > 0


def test_ans_bound_on_real_streams_and_an_empty_coder():
    """Random streams under random tables never fall below their floors; an empty coder
    decodes symbol 0 forever, which is why a reader needs the bound at all."""
    import constriction

    from dcomp.entropy import ans

    rng = np.random.default_rng(5)
    for trial in range(40):
        n = int(rng.integers(2, 40))
        peak = rng.random() < 0.5
        freq = rng.integers(1, 50, n)
        if peak:  # one dominant symbol, as the high-frequency tables have
            freq[int(rng.integers(n))] += (1 << ans.PRECISION) - 50 * n
        freq = freq * (1 << ans.PRECISION) // freq.sum()
        freq[int(np.argmax(freq))] += (1 << ans.PRECISION) - int(freq.sum())
        offsets = np.array([0, n])
        model = constriction.stream.model.Categorical(freq.astype(np.float64), perfect=False)
        p = freq / freq.sum()
        symbols = rng.choice(n, int(rng.integers(1, 20000)), p=p).astype(np.int32)
        symbols[-1] = 1 + int(rng.integers(n - 1))  # decoded last, encoded first: not the free symbol 0
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols, model)
        floor = int(ans.cost_floors(freq, offsets)[0]) * len(symbols)
        assert not ans.too_short(floor, coder.num_words()), trial
    empty = constriction.stream.stack.AnsCoder()
    assert (empty.decode(model, 1000) == 0).all() and empty.is_empty()
