"""Synthetic test images (screenshots, graphics, text, flat regions), made deterministically.

Photographs are not the only input: flat areas and graphics are where a predictive coder
with Huffman codes (at least 1 bit per sample) loses to PNG, so the benchmark and tests
measure these too.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def default_font(size: int):
    """Pillow's built-in font at `size` pixels (no font files needed)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed bitmap font
        return ImageFont.load_default()


def screenshot(w: int = 640, h: int = 400, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (w, h), (246, 246, 248))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w, 28], fill=(52, 58, 70))
    d.rectangle([0, 28, 150, h], fill=(230, 232, 236))
    for i in range(12):
        d.text((10, 40 + 26 * i), f"Folder {i:02d}", fill=(40, 40, 40), font=default_font(13))
    words = "the quick brown fox jumps over a lazy dog while codecs count every bit".split()
    for row in range(16):
        line = " ".join(rng.choice(words, size=8))
        d.text((165, 40 + 21 * row), line, fill=(20, 20, 20), font=default_font(14))
    d.rounded_rectangle([w - 140, h - 50, w - 20, h - 18], radius=6, fill=(40, 110, 220))
    d.text((w - 118, h - 44), "Compress", fill=(255, 255, 255), font=default_font(15))
    return im


def chart(w: int = 512, h: int = 384, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    for x in range(40, w, 40):
        d.line([x, 20, x, h - 30], fill=(225, 225, 225))
    colours = [(220, 60, 60), (60, 140, 220), (60, 170, 90)]
    for i, c in enumerate(colours):
        ys = np.cumsum(rng.normal(0, 8, 12)) + 120 + 60 * i
        d.line([(40 + 40 * k, float(y)) for k, y in enumerate(ys)], fill=c, width=3)
    for k in range(8):
        d.rectangle([50 + 55 * k, h - 30 - 10 * (k + 2), 80 + 55 * k, h - 30], fill=colours[k % 3])
    d.text((w // 2 - 60, 2), "Bits per pixel by week", fill="black", font=default_font(14))
    return im


def flat_with_photo_patch(photo: np.ndarray | None = None, w: int = 480, h: int = 320, seed: int = 2) -> Image.Image:
    """A flat background (a slide) with a smooth gradient band and a small noisy patch."""
    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), 250, dtype=np.uint8)
    arr[: h // 4] = np.linspace(30, 200, w, dtype=np.uint8)[None, :, None]
    patch = photo if photo is not None else rng.normal(128, 40, (96, 128, 3)).clip(0, 255).astype(np.uint8)
    ph, pw = min(patch.shape[0], h // 2), min(patch.shape[1], w // 2)
    arr[h // 2:h // 2 + ph, w // 3:w // 3 + pw] = patch[:ph, :pw]
    return Image.fromarray(arr)


def pixel_art(w: int = 256, h: int = 256, seed: int = 3) -> Image.Image:
    """A few colours in blocks, upscaled with nearest neighbour: palette-like content."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    small = palette[rng.integers(0, 6, (h // 8, w // 8))]
    return Image.fromarray(np.kron(small, np.ones((8, 8, 1), dtype=np.uint8)))


def all_images() -> dict[str, Image.Image]:
    return {"screenshot": screenshot(), "chart": chart(), "slide": flat_with_photo_patch(),
            "pixel-art": pixel_art(), "text-gray": screenshot(320, 200, seed=5).convert("L")}
