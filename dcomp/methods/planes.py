"""Pixel planes coded losslessly without weights: a colour transform, one PNG-like filter for
the whole image, then zstd or LZMA2 (formats/SPEC.md, mlp mode 1, "filtered").

It is mlp's mode for graphics and flat images, and the lossy methods' coder of the alpha plane.
"""
from __future__ import annotations

import lzma

import numpy as np
import zstandard

from dcomp.entropy import streams as symbol_streams
from dcomp.errors import CorruptFileError
from dcomp.methods import pixel_filters as F
from dcomp.varint import read_varint, write_varint

MODE_FILTERED = 1  # the payload's first byte, as mlp's mode numbers have it
BACKEND_ZSTD, BACKEND_XZ = 0, 1


# A large image first tries the filters on strips of rows: where even the best filter's
# estimate is far above the size to beat, the full trials (1 s on 12 megapixels) cannot win.
PROBE_MIN_PIXELS = 1 << 20
PROBE_STRIP_ROWS = 16
PROBE_FRACTION = 8  # one strip in eight
PROBE_MARGIN = 1.5  # zstd 19 and LZMA gain ~10% over fast zstd, the estimate is rough


def filtered_cannot_win(image: np.ndarray, to_beat: int) -> bool:
    """Whether graphics mode is surely larger than `to_beat` bytes, judged on a sample of a
    large image's rows (False for small images: trying them is cheap)."""
    h, w = image.shape[:2]
    if h * w < PROBE_MIN_PIXELS or h < PROBE_STRIP_ROWS * PROBE_FRACTION:
        return False
    rows = np.arange(h).reshape(-1, 1)[:h - h % (PROBE_STRIP_ROWS * PROBE_FRACTION)]
    strips = rows.reshape(-1, PROBE_FRACTION, PROBE_STRIP_ROWS)[:, 0].ravel()
    sample = image[strips]
    planes = np.moveaxis(F.colour_forward(sample), 2, 0)
    fast = zstandard.ZstdCompressor(level=3)
    smallest = min(len(fast.compress(F.filter_forward(planes, kind).tobytes()))
                   for kind in (F.NONE, F.LEFT, F.UP, F.GRADIENT))
    return smallest * (h / len(strips)) > PROBE_MARGIN * to_beat


def encode_filtered(image: np.ndarray, to_beat: int, effort: bool = False) -> bytes:
    """Graphics mode: try the filters with fast zstd, then spend effort only if competitive
    (or always, with `effort`)."""
    planes = np.moveaxis(F.colour_forward(image), 2, 0)
    fast = zstandard.ZstdCompressor(level=3)
    trials = {kind: F.filter_forward(planes, kind).tobytes() for kind in (F.NONE, F.LEFT, F.UP, F.GRADIENT)}
    sizes = {kind: len(fast.compress(raw)) for kind, raw in trials.items()}
    kind = min(sizes, key=sizes.get)
    raw = trials[kind]
    best = bytes([MODE_FILTERED, kind, BACKEND_ZSTD]) + fast.compress(raw)
    # zstd 19 and LZMA gain 6-10% over fast zstd on filtered photographs: beyond 10% they
    # cannot win, and trying them cost 1.3 s on two Kodak images (measured).
    if effort or sizes[kind] < 1.1 * to_beat:
        # With effort (index planes, whose statistics are not a photo's), LZMA tries every
        # filter: fast zstd's favourite is often not LZMA's. PRESET_EXTREME searches harder; the
        # stream's properties, hence its decoder, are preset 9's.
        preset = 9 | (lzma.PRESET_EXTREME if effort else 0)
        blobs = [(kind, BACKEND_ZSTD, zstandard.ZstdCompressor(level=19).compress(raw))]
        for k in (trials if effort else [kind]):
            blobs.append((k, BACKEND_XZ, lzma.compress(trials[k], format=lzma.FORMAT_RAW,
                                                       filters=[{"id": lzma.FILTER_LZMA2, "preset": preset}])))
        for k, backend, blob in blobs:
            if len(blob) + 3 < len(best):
                best = bytes([MODE_FILTERED, k, backend]) + blob
    return best


def decode_filtered(data: bytes, shape) -> np.ndarray:
    h, w, c = shape
    if len(data) < 3 or data[1] > F.GRADIENT or data[2] > BACKEND_XZ:
        raise ValueError("bad filtered header")
    n = h * w * c
    if data[2] == BACKEND_ZSTD:
        raw = symbol_streams.zstd_decompress(data[3:], n)
    else:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
        raw = np.frombuffer(dec.decompress(data[3:], max_length=n), dtype=np.uint8).copy()  # writable
        if not dec.eof or dec.unused_data or len(raw) != n:  # the stream must end exactly with the image
            raise ValueError("filtered data does not match the image size")
    # In place, then one interleaving copy: two image-sized buffers in all.
    planes = raw.reshape(c, h, w)
    F.filter_inverse_inplace(planes, data[1])
    image = np.ascontiguousarray(np.moveaxis(planes, 0, 2))
    F.colour_inverse_inplace(image)
    return image


MODE_PALETTE = 3  # mlp's mode numbers: the colours stored as they are,
MODE_PALETTE_PACKED = 4  # or coded as a one-column image in the filtered mode
MAX_COLOURS = 256
PALETTE_PROBE = 1 << 14  # pixels sampled first


def encode_palette(image: np.ndarray) -> bytes | None:
    """Palette mode, for images of at most 256 distinct pixels (graphics, palette PNGs): the
    colours, then the plane of their indices in the filtered mode. None for other images.

    The colours are ordered as a chain through colour space (from the darkest, each next one
    the nearest left), so that neighbouring indices tend to be similar colours, which a filter
    then sees as small differences: 3% smaller than ordering by luma on kodim23 at 64 colours."""
    h, w, c = image.shape
    flat = image.reshape(-1, c)
    if len(np.unique(_pixel_keys(flat[::max(1, len(flat) // PALETTE_PROBE)]))) > MAX_COLOURS:
        return None  # a photograph: known from a sample, before any work on every pixel
    colours, index = np.unique(_pixel_keys(flat), return_inverse=True)
    if len(colours) > MAX_COLOURS:
        return None
    table = np.stack([(colours >> (8 * (c - 1 - i))) & 255 for i in range(c)], axis=1).astype(np.uint8)
    order = _colour_chain(table.astype(np.int64))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    plane = rank[index].astype(np.uint8).reshape(h, w, 1)
    colours = np.ascontiguousarray(table[order].reshape(len(table), 1, c))
    # An index plane is one byte a pixel and its statistics are not a photo's: the stronger
    # back-ends are always worth trying on it.
    indices = encode_filtered(plane, 0, effort=True)
    stored = bytes([MODE_PALETTE, len(table) - 1]) + colours.tobytes() + indices
    # The colours as a column, each next one near the last (the chain): its filtered differences
    # take 192 bytes of 64 graphics colours down to 60-130, where a small file notices them.
    packed = encode_filtered(colours, 0, effort=True)
    packed = bytes([MODE_PALETTE_PACKED, len(table) - 1]) + write_varint(len(packed)) + packed + indices
    return min(stored, packed, key=len)


def _pixel_keys(flat: np.ndarray) -> np.ndarray:
    """(n, C) uint8 pixels as one int64 each, for np.unique without sorting rows."""
    keys = np.zeros(len(flat), np.int64)
    for i in range(flat.shape[1]):
        keys = keys * 256 + flat[:, i]
    return keys


def _colour_chain(table: np.ndarray) -> np.ndarray:
    """Indices of the colours (n, C) from the darkest (lowest sum, first of equals), each
    next one the nearest of those left (squared distance, first of equals)."""
    left = np.ones(len(table), bool)
    current = int(np.argmin(table.sum(axis=1)))
    order = [current]
    left[current] = False
    for _ in range(len(table) - 1):
        d = ((table - table[current]) ** 2).sum(axis=1)
        d[~left] = np.iinfo(np.int64).max
        current = int(np.argmin(d))
        order.append(current)
        left[current] = False
    return np.array(order, np.int64)


def decode_palette(data: bytes, shape) -> np.ndarray:
    """Either palette mode (the first byte says which)."""
    h, w, c = shape
    if len(data) < 2:
        raise ValueError("bad palette header")
    n = data[1] + 1
    if data[0] == MODE_PALETTE_PACKED:
        size, pos = read_varint(data, 2, "palette colours")
        if pos + size > len(data) or size < 3 or data[pos] != MODE_FILTERED:
            raise ValueError("bad packed palette colours")
        table = decode_filtered(data[pos:pos + size], (n, 1, c)).reshape(n, c)
        start = pos + size
    else:
        start = 2 + n * c
        if len(data) < start:
            raise ValueError("bad palette payload")
        table = np.frombuffer(data, np.uint8, n * c, 2).reshape(n, c)
    if len(data) < start + 3 or data[start] != MODE_FILTERED:
        raise ValueError("bad palette payload")
    index = decode_filtered(data[start:], (h, w, 1))[:, :, 0]
    if int(index.max(initial=0)) >= n:
        raise ValueError("palette index out of range")
    return table[index]


def encode_plane(plane: np.ndarray) -> bytes:
    """An (H, W, 1) uint8 plane (e.g. alpha of a lossy image), losslessly."""
    return encode_filtered(plane, 0)


def decode_plane(data: bytes, shape) -> np.ndarray:
    try:
        return decode_filtered(data, shape)
    except (ValueError, zstandard.ZstdError, lzma.LZMAError) as exc:
        raise CorruptFileError(f"corrupted lossless plane ({exc})") from None
