"""Resource limits shared by the API and the CLI."""

# Images over this many pixels are refused before any pixel is allocated (a decompression
# bomb guard: an 8192 x 8192 image, 256 MB as RGBA). Callers raise it with max_pixels.
DEFAULT_MAX_PIXELS = 1 << 26
