"""The Python API: image in, .dcz bytes out, and back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcomp import container, registry
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.imageio import to_array
from dcomp.limits import DEFAULT_MAX_PIXELS, check_pixels


@dataclass(frozen=True)
class Compressed:
    """A compressed file and what is known of it without decoding it again."""
    data: bytes
    quality: int | None  # None for lossless methods
    psnr: float | None = None  # dB; measured only when a PSNR target was searched for


def default_quality(method: str) -> int | None:
    """The middle quality of a lossy method (as cwebp defaults to 75 of 100); None if lossless."""
    qualities = registry.get(method).qualities
    return None if qualities is None else qualities[(len(qualities) - 1) // 2]


def compress(image, method: str = "mlp", quality: int | None = None, device: str = "auto",
             target_bpp: float | None = None, target_psnr: float | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Compress a PIL image or uint8 array (H, W), (H, W, 3) or (H, W, 4) into .dcz bytes.

    A lossy method takes a quality (default: its middle one), or a target instead: target_bpp
    picks the highest quality whose file stays within that many bits per pixel, target_psnr
    the lowest quality whose decoded image reaches that PSNR (dB, over all channels).
    An image of more than `max_pixels` pixels is refused before it is converted.
    """
    return compress_report(image, method, quality, device, target_bpp, target_psnr, max_pixels).data


def compress_report(image, method: str = "mlp", quality: int | None = None, device: str = "auto",
                    target_bpp: float | None = None, target_psnr: float | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS, encoder_options: dict | None = None) -> Compressed:
    """compress(), returning the quality used and, for a PSNR target, the PSNR reached.

    encoder_options: passed to the method's encoder (e.g. mlp's predictor="linear" ablation)."""
    codec = registry.get(method)
    check_pixels(*_width_height(image), max_pixels)
    arr, mode = to_array(image)
    if target_bpp is not None or target_psnr is not None:
        if codec.qualities is None:
            raise UnsupportedError(f"method {method} is lossless: --bpp and --psnr need a lossy method")
        return _compress_to_target(arr, method, list(codec.qualities), device, target_bpp, target_psnr, max_pixels)
    if codec.qualities is None:
        if quality not in (None, 0):
            raise UnsupportedError(f"method {method} is lossless and takes no quality")
        quality = 0
    elif quality is None:
        quality = default_quality(method)
    elif quality not in codec.qualities:
        raise UnsupportedError(f"method {method} needs a quality in {codec.qualities.start}..{codec.qualities.stop - 1}")
    # A progressive file's quality is the number of iteration sections it holds, so its header
    # says 0: a file cut after any iteration is then a prefix of the original, byte for byte.
    header = container.Header(codec.method_id, codec.model_id(), arr.shape[1], arr.shape[0], mode,
                              0 if _progressive(codec) else quality)
    header.to_bytes()  # validates the geometry before any work is done
    sections = codec.encode(arr, quality or None, device, **(encoder_options or {}))
    return Compressed(container.Container(header, sections).to_bytes(), quality or None)


def _compress_to_target(arr: np.ndarray, method: str, qualities: list[int], device: str,
                        target_bpp: float | None, target_psnr: float | None, max_pixels: int) -> Compressed:
    """Binary search over the qualities; size and PSNR grow with quality."""
    from dcomp.metrics import psnr

    pixels = arr.shape[0] * arr.shape[1]
    files: dict[int, bytes] = {}
    measured: dict[int, float] = {}  # bpp or PSNR of each quality tried

    def measure(q: int) -> float:
        if q not in measured:
            files[q] = compress(arr, method, q, device, max_pixels=max_pixels)
            measured[q] = (len(files[q]) * 8 / pixels if target_bpp is not None
                           else psnr(arr, decompress(files[q], device, max_pixels).reshape(arr.shape)))
        return measured[q]

    lo, hi = 0, len(qualities) - 1
    if target_bpp is not None:  # the last quality within the target
        if measure(qualities[0]) > target_bpp:
            raise UnsupportedError(f"cannot reach {target_bpp} bpp with {method}: its lowest quality gives "
                                   f"{measured[qualities[0]]:.3f} bpp")
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if measure(qualities[mid]) <= target_bpp else (lo, mid - 1)
    else:  # the first quality reaching the target
        if measure(qualities[-1]) < target_psnr:
            raise UnsupportedError(f"cannot reach {target_psnr} dB with {method}: its highest quality gives "
                                   f"{measured[qualities[-1]]:.2f} dB")
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if measure(qualities[mid]) >= target_psnr else (mid + 1, hi)
    measure(qualities[lo])
    return Compressed(files[qualities[lo]], qualities[lo], None if target_psnr is None else measured[qualities[lo]])


@dataclass(frozen=True)
class Decompressed:
    """A decoded image and what made it."""
    image: np.ndarray
    method: str  # the method that wrote the file
    decoder: str  # the method that decoded it
    quality: int | None  # None for lossless methods


def _progressive(codec) -> bool:
    return getattr(codec, "progressive", False)


def decompress(data: bytes, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
               decoder: str | None = None, iterations: int | None = None) -> np.ndarray:
    """Decode .dcz bytes to a uint8 array shaped like np.asarray() of the original image.

    A header declaring more than `max_pixels` pixels is refused before anything is allocated.
    `decoder` names another method to decode with instead of the one the file prefers; it must
    read the same bitstream (e.g. gan-ae for a cnn-ae-ft file, and the reverse).
    `iterations`: of a progressive file (cnn-rnn-ae), decode only the first that many."""
    return decompress_report(data, device, max_pixels, decoder, iterations).image


def decompress_report(data: bytes, device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                      decoder: str | None = None, iterations: int | None = None) -> Decompressed:
    """decompress(), also naming the file's method, the decoder used and the quality."""
    parsed = container.parse(data)
    header = parsed.header
    check_pixels(header.width, header.height, max_pixels)
    codec = made_by = registry.by_id(header.method_id)
    if decoder is not None:
        chosen = registry.get(decoder)
        if chosen.bitstream != codec.bitstream:
            readable = [n for n in registry.names() if registry.get(n).bitstream == codec.bitstream]
            raise UnsupportedError(f"--decoder {decoder} cannot decode {codec.name} files "
                                   f"(decoders of this file: {', '.join(readable)})")
        codec = chosen
    try:
        installed = codec.model_id()
    except WeightsError:
        installed = None  # missing or unreadable: weights kept in weights/legacy may still parse the file
    if installed != header.model_id:
        retired = registry.legacy(codec.name, header.model_id)
        if retired is None:
            if installed is None:
                codec.model_id()  # the installed weights' own error
            raise WeightsError(f"file was made with other {codec.name} weights (model id {header.model_id.hex()}, "
                               f"installed {installed.hex()}, none kept in weights/legacy)")
        codec = retired
    quality = header.quality or None
    if _progressive(codec):
        available = len(codec.iteration_sections(header, parsed.sections))
        quality = available if iterations is None else min(iterations, available)
        image = codec.decode(header, parsed.sections, device, iterations=iterations)
    elif iterations is not None:
        raise UnsupportedError(f"--iterations: {codec.name} files are not progressive")
    else:
        image = codec.decode(header, parsed.sections, device)
    if image.shape != (header.height, header.width, header.channels):
        raise CorruptFileError("decoded image does not match the header")
    return Decompressed(image[:, :, 0] if header.channels == 1 else image, made_by.name, codec.name, quality)


def truncate(data: bytes, iterations: int | None = None, max_bytes: int | None = None) -> bytes:
    """The first `iterations` iterations of a progressive file, or the most that fit in
    `max_bytes` bytes, without decoding: a prefix of the file, itself a valid file."""
    if (iterations is None) == (max_bytes is None):
        raise UnsupportedError("truncate needs an iteration count or a byte budget (one of them)")
    parsed = container.parse(data)
    header = parsed.header
    codec = registry.by_id(header.method_id)
    if not _progressive(codec):
        raise UnsupportedError(f"{codec.name} files are not progressive: only cnn-rnn-ae files can be cut")
    if iterations is None:  # the most iterations whose prefix fits the budget
        size = len(data)
        steps = codec.iteration_sections(header, parsed.sections)
        iterations = len(steps)
        while iterations > 1 and size > max_bytes:
            size -= container.framed_size(steps[iterations - 1])
            iterations -= 1
        if size > max_bytes:
            raise UnsupportedError(f"--bytes {max_bytes}: the first iteration alone takes {size} bytes")
    return container.Container(header, codec.prefix(header, parsed.sections, iterations)).to_bytes()


def _width_height(image) -> tuple[int, int]:
    """Of a PIL image or an array, before converting it (0 x 0 for anything else: to_array
    refuses it)."""
    if isinstance(image, np.ndarray):
        return (image.shape[1], image.shape[0]) if image.ndim >= 2 else (0, 0)
    size = getattr(image, "size", None)  # PIL: (width, height)
    return size if isinstance(size, tuple) else (0, 0)


def info(data: bytes) -> dict:
    """Header fields and section sizes, without decoding."""
    parsed = container.parse(data)
    h = parsed.header
    method = next((n for n, m in registry.METHODS.items() if m[0] == h.method_id), f"unknown ({h.method_id})")
    header_bytes = len(h.to_bytes())
    fields = {
        "method": method, "method_id": h.method_id, "model_id": h.model_id.hex(),
        "width": h.width, "height": h.height, "mode": h.mode, "bit_depth": h.bit_depth,
        "quality": h.quality or None, "file_bytes": len(data), "header_bytes": header_bytes,
        "sections": [len(s) for s in parsed.sections],
        "bits_per_pixel": round(len(data) * 8 / (h.width * h.height), 4),
        "bits_per_subpixel": round(len(data) * 8 / (h.width * h.height * h.channels), 4),
    }
    codec = registry.by_id(h.method_id) if method in registry.METHODS else None
    if codec is not None and _progressive(codec):
        steps = codec.iteration_sections(h, parsed.sections)
        fields["quality"] = fields["iterations"] = len(steps)
        # What each iteration adds to the file: its payload with its length and CRC.
        fields["iteration_bytes"] = [container.framed_size(s) for s in steps]
    return fields
