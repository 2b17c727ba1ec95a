"""Classical image codecs (JPEG, JPEG 2000, WebP, AVIF, JPEG XL, PNG, JPEG-LS) behind one interface.

Backends are Pillow and imagecodecs, both imported lazily: a codec whose backend is missing says
why through `unavailable_reason()` instead of breaking the import of this module.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def image_mode(img: np.ndarray) -> str:
    """Mode name (L, RGB, RGBA) of an HxW or HxWxC uint8 array; ValueError for anything else."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(img, 'dtype', type(img).__name__)}")
    if img.ndim == 2:
        return "L"
    if img.ndim == 3 and img.shape[2] in _MODES:
        return _MODES[img.shape[2]]
    raise ValueError(f"expected HxW or HxWxC with C in 1, 3, 4; got shape {img.shape}")


@dataclass
class ClassicalCodec:
    """One codec at fixed options; `settings` is its default sweep, ordered from smallest to largest file.

    A lossy setting means: JPEG/WebP/AVIF quality, JPEG 2000 target bits per pixel, JPEG XL
    butteraugli distance. Lossless codecs take the single setting None.
    """

    name: str
    lossless: bool
    settings: list
    modes: tuple[str, ...]
    _encode: Callable[[np.ndarray, Any], bytes] = field(repr=False)
    _decode: Callable[[bytes], np.ndarray] = field(repr=False)
    _missing: Callable[[], str | None] = field(repr=False)

    def unavailable_reason(self) -> str | None:
        """None when the backend works here, else a short reason such as 'not installed (...)'."""
        try:
            return self._missing()
        except Exception as exc:  # a half-broken install must not take the benchmark down
            return f"backend check failed ({type(exc).__name__}: {exc})"

    def available(self) -> bool:
        return self.unavailable_reason() is None

    def encode(self, img: np.ndarray, setting: Any = None) -> bytes:
        mode = image_mode(img)
        if mode not in self.modes:
            raise ValueError(f"{self.name} does not support {mode}")
        if self.lossless and setting is not None:
            raise ValueError(f"{self.name} is lossless and takes no setting (got {setting!r})")
        if not self.lossless and setting is None:
            raise ValueError(f"{self.name} needs a setting, e.g. one of {self.settings}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        return bytes(self._encode(np.ascontiguousarray(img), setting))

    def decode(self, data: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Decode to HxWxC uint8, or to exactly `shape` (the encoded array's shape) when given.

        `shape` is needed for an exact match because a grayscale file does not record whether it
        came from HxW or HxWx1, and WebP/AVIF drop an alpha channel that is fully opaque.
        """
        arr = np.asarray(self._decode(bytes(data)))
        if arr.dtype != np.uint8:
            raise ValueError(f"{self.name} decoded to {arr.dtype}, expected uint8")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if shape is None:
            return arr
        if len(shape) == 3 and shape[2] == 4 and arr.shape[2] == 3:
            arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        if arr.size != int(np.prod(shape)) or arr.shape[:2] != tuple(shape[:2]):
            raise ValueError(f"{self.name} decoded shape {arr.shape} does not match {tuple(shape)}")
        return arr.reshape(shape)

    def roundtrip(self, img: np.ndarray, setting: Any = None) -> tuple[bytes, np.ndarray]:
        """Encode then decode; the decoded array has img's shape."""
        data = self.encode(img, setting)
        return data, self.decode(data, img.shape)


def _pil_missing(feature: str, label: str, min_version: tuple[int, int] = (0, 0)) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            import PIL
            from PIL import features
        except ImportError:
            return "not installed (Pillow missing)"
        if tuple(int(p) for p in PIL.__version__.split(".")[:2]) < min_version:
            return f"needs Pillow >= {'.'.join(map(str, min_version))} (have {PIL.__version__})"
        return None if features.check(feature) else f"not installed (Pillow built without {label})"

    return check


def _ic_missing(attr: str, label: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            import imagecodecs
        except ImportError:
            return "not installed (imagecodecs missing)"
        codec = getattr(imagecodecs, attr, None)
        return None if codec is not None and codec.available else f"not installed (imagecodecs lacks {label})"

    return check


def _pil_encode(img: np.ndarray, fmt: str, **params: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **params)
    return buf.getvalue()


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in _MODES.values():
            raise ValueError(f"decoded image has unexpected mode {im.mode}")
        return np.asarray(im)


def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else img.shape[2]


def _j2k_encode(img: np.ndarray, bpp: float | None) -> bytes:
    # Pillow defaults to mct=0, which costs ~3 dB lossy and ~35% lossless on RGB; the transform
    # only exists for 3+ components. A raw codestream (no_jp2) keeps box overhead out of the rate.
    params: dict[str, Any] = {"no_jp2": True, "mct": int(_channels(img) >= 3)}
    if bpp is None:
        params["irreversible"] = False  # 5/3 wavelet + RCT, a single full-quality layer
    else:
        if bpp <= 0:
            raise ValueError(f"jpeg2000 target bpp must be positive, got {bpp}")
        # OpenJPEG rate control takes a compression ratio against the raw 8-bit samples
        params.update(irreversible=True, quality_mode="rates", quality_layers=[8 * _channels(img) / bpp])
    return _pil_encode(img, "JPEG2000", **params)


def _avif_encode(img: np.ndarray, quality: int) -> bytes:
    import imagecodecs

    fmt = imagecodecs.AVIF.PIXEL_FORMAT
    if img.ndim == 2:
        # imagecodecs codes a 2-D array losslessly whatever the quality; grey RGB as YUV 4:0:0 is
        # the same monochrome AVIF but honours the quality
        return imagecodecs.avif_encode(np.repeat(img[:, :, None], 3, axis=2), int(quality), speed=4,
                                       pixelformat=fmt.YUV400)
    # pinned so results do not move with the library's default chroma layout
    return imagecodecs.avif_encode(img, int(quality), speed=4, pixelformat=fmt.YUV444)


def _jxl_encode(img: np.ndarray, distance: float | None) -> bytes:
    import imagecodecs

    if distance is None:
        return imagecodecs.jpegxl_encode(img, effort=7, lossless=True)
    return imagecodecs.jpegxl_encode(img, effort=7, distance=float(distance))


def _ic(func: str) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        import imagecodecs

        return getattr(imagecodecs, func)(*args)

    return call


_GRAY_COLOR = ("L", "RGB")
_ALL = ("L", "RGB", "RGBA")
_QUALITIES = list(range(5, 100, 5))

CODECS: dict[str, ClassicalCodec] = {
    c.name: c
    for c in [
        ClassicalCodec(
            "jpeg", False, _QUALITIES, _GRAY_COLOR,
            # 4:2:0 is libjpeg's usual default; optimized Huffman tables are free (lossless) savings
            lambda img, q: _pil_encode(img, "JPEG", quality=int(q), subsampling=2, optimize=True),
            _pil_decode, _pil_missing("jpg", "libjpeg"),
        ),
        ClassicalCodec(
            "jpeg2000", False, [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0], _ALL,
            # 9.1 introduced the mct option; older Pillow silently ignores it and encodes without MCT
            _j2k_encode, _pil_decode, _pil_missing("jpg_2000", "openjpeg", (9, 1)),
        ),
        ClassicalCodec(
            "webp", False, _QUALITIES, ("RGB", "RGBA"),
            lambda img, q: _pil_encode(img, "WEBP", quality=int(q), method=6),
            _pil_decode, _pil_missing("webp", "libwebp"),
        ),
        ClassicalCodec(
            "avif", False, list(range(10, 100, 10)), _ALL,
            _avif_encode, _ic("avif_decode"), _ic_missing("AVIF", "avif"),
        ),
        ClassicalCodec(
            "jxl", False, [12.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5], _ALL,
            _jxl_encode, _ic("jpegxl_decode"), _ic_missing("JPEGXL", "jpegxl"),
        ),
        ClassicalCodec(
            "png", True, [None], _ALL,
            lambda img, _: _pil_encode(img, "PNG", optimize=True, compress_level=9),
            _pil_decode, _pil_missing("zlib", "zlib"),
        ),
        ClassicalCodec(
            "webp-lossless", True, [None], ("RGB", "RGBA"),
            # exact=True: libwebp otherwise rewrites RGB under fully transparent pixels
            lambda img, _: _pil_encode(img, "WEBP", lossless=True, quality=100, method=6, exact=True),
            _pil_decode, _pil_missing("webp", "libwebp"),
        ),
        ClassicalCodec(
            "jpeg2000-lossless", True, [None], _ALL,
            _j2k_encode, _pil_decode, _pil_missing("jpg_2000", "openjpeg", (9, 1)),
        ),
        ClassicalCodec(
            "jxl-lossless", True, [None], _ALL,
            _jxl_encode, _ic("jpegxl_decode"), _ic_missing("JPEGXL", "jpegxl"),
        ),
        ClassicalCodec(
            "jpegls", True, [None], _ALL,
            lambda img, _: _ic("jpegls_encode")(img), _ic("jpegls_decode"), _ic_missing("JPEGLS", "jpegls"),
        ),
    ]
}


def get_codec(name: str) -> ClassicalCodec:
    try:
        return CODECS[name]
    except KeyError:
        raise KeyError(f"unknown classical codec {name!r}; known: {', '.join(CODECS)}") from None


def available_codecs(names: list[str] | None = None) -> tuple[list[ClassicalCodec], list[str]]:
    """The usable codecs among `names` (all when None) and one note per skipped codec.

    Unknown names raise KeyError: a typo should not be mistaken for a missing backend.
    """
    usable, notes = [], []
    for codec in [get_codec(n) for n in (CODECS if names is None else names)]:
        reason = codec.unavailable_reason()
        if reason is None:
            usable.append(codec)
        else:
            notes.append(f"{codec.name}: {reason}")
    return usable, notes
