"""Resource limits shared by the API and the CLI."""
from __future__ import annotations

from dcomp.errors import LimitError

# Images over this many pixels are refused before any pixel is allocated (a decompression
# bomb guard: an 8192 x 8192 image, 256 MB as RGBA). Callers raise it with max_pixels.
DEFAULT_MAX_PIXELS = 1 << 26


def check_pixels(width: int, height: int, max_pixels: int, name: str | None = None) -> None:
    """LimitError, naming the image, if width x height is over max_pixels: called on declared
    sizes, before anything of the image's size is allocated."""
    if width * height > max_pixels:
        where = f"{name}: " if name else ""
        raise LimitError(f"{where}image of {width}x{height} pixels is over the limit of {max_pixels} pixels "
                         "(raise it with --max-pixels)")
