"""The Python API: image in, .dcz bytes out, and back."""
from __future__ import annotations

import numpy as np

from dcomp import container, registry
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.imageio import to_array


def compress(image, method: str = "mlp", quality: int | None = None, device: str = "auto") -> bytes:
    """Compress a PIL image or uint8 array (H, W), (H, W, 3) or (H, W, 4) into .dcz bytes."""
    codec = registry.get(method)
    arr, mode = to_array(image)
    if codec.qualities is None:
        if quality not in (None, 0):
            raise UnsupportedError(f"method {method} is lossless and takes no quality")
        quality = 0
    elif quality is None or quality not in codec.qualities:
        raise UnsupportedError(f"method {method} needs a quality in {codec.qualities.start}..{codec.qualities.stop - 1}")
    header = container.Header(codec.method_id, codec.model_id(), arr.shape[1], arr.shape[0], mode, quality)
    header.to_bytes()  # validates the geometry before any work is done
    sections = codec.encode(arr, quality or None, device)
    return container.Container(header, sections).to_bytes()


def decompress(data: bytes, device: str = "auto") -> np.ndarray:
    """Decode .dcz bytes to a uint8 array shaped like np.asarray() of the original image."""
    parsed = container.parse(data)
    header = parsed.header
    codec = registry.by_id(header.method_id)
    if codec.model_id() != header.model_id:
        raise WeightsError(f"file was made with other {codec.name} weights (model id {header.model_id.hex()}, "
                           f"installed {codec.model_id().hex()})")
    image = codec.decode(header, parsed.sections, device)
    if image.shape != (header.height, header.width, header.channels):
        raise CorruptFileError("decoded image does not match the header")
    return image[:, :, 0] if header.channels == 1 else image


def info(data: bytes) -> dict:
    """Header fields and section sizes, without decoding."""
    parsed = container.parse(data)
    h = parsed.header
    method = next((n for n, m in registry.METHODS.items() if m[0] == h.method_id), f"unknown ({h.method_id})")
    header_bytes = len(h.to_bytes())
    return {
        "method": method, "method_id": h.method_id, "model_id": h.model_id.hex(),
        "width": h.width, "height": h.height, "mode": h.mode, "bit_depth": h.bit_depth,
        "quality": h.quality or None, "file_bytes": len(data), "header_bytes": header_bytes,
        "sections": [len(s) for s in parsed.sections],
        "bits_per_pixel": round(len(data) * 8 / (h.width * h.height), 4),
        "bits_per_subpixel": round(len(data) * 8 / (h.width * h.height * h.channels), 4),
    }
