"""Reading and writing images as uint8 arrays (H, W, C), with the modes dcomp supports."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dcomp.errors import UnsupportedError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def to_array(image) -> tuple[np.ndarray, str]:
    """PIL image or array to (H, W, C) uint8 and its mode name (L, RGB, RGBA).

    Palette images become RGB or RGBA (losslessly); 16-bit, float and other modes are refused,
    since converting them would silently lose information."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UnsupportedError(f"only 8-bit images are supported (got {image.dtype})")
        arr = image[:, :, None] if image.ndim == 2 else image
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise UnsupportedError(f"unsupported array shape {image.shape}")
        return np.ascontiguousarray(arr), {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    if not isinstance(image, Image.Image):
        raise TypeError("expected a PIL image or a numpy array")
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "LA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB", "RGBA"):
        raise UnsupportedError(f"image mode {mode} is not supported (8-bit L, RGB, RGBA and palette are)")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr), image.mode


def read_image(data: bytes, name: str = "input"):
    from PIL import Image, UnidentifiedImageError

    from dcomp.container import MAX_PIXELS

    # Pillow's decompression-bomb guard (89/179 Mpixels) is below what .dcz holds; use ours.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError:
        raise UnsupportedError(f"{name}: image larger than {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise UnsupportedError(f"{name}: not a readable image ({reason})") from None
    return image


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def to_pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]])


# Output formats by extension, and the modes each holds exactly (the decoder's output must
# be the decoded image, so a format that would drop alpha or colour is refused, not used).
OUTPUT_FORMATS = {".png": ("PNG", ("L", "RGB", "RGBA")), ".tif": ("TIFF", ("L", "RGB", "RGBA")),
                  ".tiff": ("TIFF", ("L", "RGB", "RGBA")), ".webp": ("WEBP", ("RGB", "RGBA")),
                  ".bmp": ("BMP", ("L", "RGB")), ".ppm": ("PPM", ("RGB",)), ".pgm": ("PPM", ("L",)),
                  ".pnm": ("PPM", ("L", "RGB"))}


def encode_image(arr: np.ndarray, suffix: str) -> bytes:
    """Encode a decoded image for writing, losslessly, in the format its suffix names (PNG
    when there is none)."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    fmt, modes = OUTPUT_FORMATS.get(suffix.lower() or ".png", (None, ()))
    if fmt is None:
        raise UnsupportedError(f"cannot write '{suffix}' files (use one of: {', '.join(OUTPUT_FORMATS)})")
    if mode not in modes:
        raise UnsupportedError(f"{fmt} cannot hold a {mode} image exactly (use .png)")
    buf = io.BytesIO()
    if fmt == "WEBP":
        to_pil(arr).save(buf, fmt, lossless=True, quality=100, exact=True)
    else:
        to_pil(arr).save(buf, fmt)
    return buf.getvalue()
