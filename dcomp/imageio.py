"""Reading and writing images as uint8 arrays (H, W, C), with the modes dcomp supports."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcomp.errors import UnsupportedError
from dcomp.limits import DEFAULT_MAX_PIXELS, check_pixels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif",
                  ".avif"}


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


@dataclass
class LoadedImage:
    """An input image and the one-line notes a user should see about what was done to it."""
    image: object  # PIL.Image.Image
    notes: list[str] = field(default_factory=list)


def read_image(data: bytes, name: str = "input", max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an input image, refusing one over `max_pixels` before its pixels are allocated.

    EXIF orientation is applied (the stored pixels are not what a viewer shows); frames after
    the first and metadata that .dcz does not store are reported in `notes`, never dropped
    silently."""
    from PIL import Image, UnidentifiedImageError

    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Our check below replaces Pillow's bomb guard (a warning on stderr, an error only at
        # twice its own limit): it runs on the declared size, before the pixels are allocated.
        Image.MAX_IMAGE_PIXELS = None
        image = Image.open(io.BytesIO(data))
        check_pixels(*image.size, max_pixels, name)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise UnsupportedError(f"{name}: not a readable image ({reason})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"{name}: warning: {frames} frames, only the first is compressed")
    image, orientation_note = _apply_orientation(image, name)
    notes += [orientation_note] if orientation_note else []
    dropped = [label for label, present in (("ICC profile", image.info.get("icc_profile")),
                                            ("EXIF", image.info.get("exif")),
                                            ("XMP", image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")),
                                            ("text chunks", getattr(image, "text", None))) if present]
    if dropped:
        notes.append(f"{name}: warning: .dcz stores pixels only; dropped {', '.join(dropped)}")
    return LoadedImage(image, notes)


# EXIF orientation tag values and what applying them does, for the note.
_ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "transposed", 6: "rotated 90° clockwise",
                 7: "transversed", 8: "rotated 90° counter-clockwise"}
_EXIF_ORIENTATION = 0x0112


def _apply_orientation(image, name: str):
    from PIL import ImageOps

    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in _ORIENTATIONS:
        return image, None
    rotated = ImageOps.exif_transpose(image)
    rotated.info = {k: v for k, v in image.info.items() if k != "exif"}  # the tag no longer applies
    return rotated, f"{name}: EXIF orientation applied to the pixels ({_ORIENTATIONS[orientation]})"


def _imagecodecs(codec: str):
    """The imagecodecs module when it is installed with `codec`, else None."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs if getattr(imagecodecs, codec).available else None


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def to_pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]])


# Output formats by extension and the modes each holds. Decoded images are written exactly
# (a format that would drop alpha or colour is refused, not used), except in the formats
# that are lossy by nature, re-encoded at a high quality for sharing.
JPEG_QUALITY, AVIF_QUALITY = 95, 90
OUTPUT_FORMATS = {".png": ("PNG", ("L", "RGB", "RGBA")), ".tif": ("TIFF", ("L", "RGB", "RGBA")),
                  ".tiff": ("TIFF", ("L", "RGB", "RGBA")), ".webp": ("WEBP", ("RGB", "RGBA")),
                  ".bmp": ("BMP", ("L", "RGB")), ".ppm": ("PPM", ("RGB",)), ".pgm": ("PPM", ("L",)),
                  ".pnm": ("PPM", ("L", "RGB")), ".jpg": ("JPEG", ("L", "RGB")), ".jpeg": ("JPEG", ("L", "RGB")),
                  ".avif": ("AVIF", ("L", "RGB", "RGBA")), ".jxl": ("JXL", ("L", "RGB", "RGBA"))}


def output_suffixes() -> list[str]:
    """The extensions this installation can write (AVIF and JPEG XL depend on the libraries)."""
    from PIL import features

    available = {"AVIF": features.check("avif"), "JXL": _imagecodecs("JPEGXL") is not None}
    return [s for s, (fmt, _) in OUTPUT_FORMATS.items() if available.get(fmt, True)]


# zlib level of written PNGs: a decoded image is mostly an intermediate, and the default
# level 6 takes 2.7x as long as 3 for 8% smaller files (2.5 s against 0.9 s on 4000x3000).
PNG_COMPRESS_LEVEL = 3


def encode_image(arr: np.ndarray, suffix: str) -> bytes:
    """Encode a decoded image in the format its suffix names (PNG when there is none):
    losslessly, but for JPEG (quality 95, no chroma subsampling) and AVIF (quality 90)."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    suffix = suffix.lower() or ".png"
    fmt, modes = OUTPUT_FORMATS.get(suffix, (None, ()))
    if fmt is None or suffix not in output_suffixes():
        raise UnsupportedError(f"cannot write '{suffix}' files (use one of: {', '.join(output_suffixes())})")
    if mode not in modes:
        raise UnsupportedError(f"{fmt} cannot hold a {mode} image exactly (use .png)")
    if fmt == "JXL":
        return bytes(_imagecodecs("JPEGXL").jpegxl_encode(arr[:, :, 0] if mode == "L" else arr, lossless=True))
    buf = io.BytesIO()
    options = {"WEBP": {"lossless": True, "quality": 100, "exact": True},
               "JPEG": {"quality": JPEG_QUALITY, "subsampling": 0},
               "AVIF": {"quality": AVIF_QUALITY},
               "PNG": {"compress_level": PNG_COMPRESS_LEVEL}}.get(fmt, {})
    to_pil(arr).save(buf, fmt, **options)
    return buf.getvalue()
