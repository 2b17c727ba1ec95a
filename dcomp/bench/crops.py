"""Side-by-side crop sheets: what the reconstructions look like at one rate (`--save-crops DIR`).

For each of the first few images, one PNG: the original, then every dcomp lossy method, then
JPEG and WebP (those measured in the run), each at its measured setting whose bpp is nearest a
target, cropped to the central CROP_SIDE x CROP_SIDE pixels (the whole image if smaller) and
labelled with codec, setting, bpp and PSNR. The chosen settings are encoded again after the run
instead of keeping decoded images from the measurement: sheets then come out the same from
serial, `--jobs` and resumed runs, and the timed measurement carries no extra work. The labels'
bpp and PSNR are those of that round trip, over the whole image.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dcomp import metrics
from dcomp.bench.synthetic import default_font

if TYPE_CHECKING:
    from dcomp.datasets import BenchImage
    from dcomp.bench.runner import Entry

CROP_SIDE = 256
MIN_PANEL_SIDE = 128  # smaller crops are enlarged by a whole factor: pixels stay visible, labels fit
CLASSICAL_PANELS = ("jpeg", "webp")  # after the dcomp methods, in this order
FONT_SIZE = 12
LINE_HEIGHT = 16
MARGIN = 4  # around the label text
GAP = 8  # between panels
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)

# (entry, (H, W, C) image, setting) -> (file bytes, decoded (H, W, C) image)
RoundTrip = Callable[["Entry", np.ndarray, object], tuple[bytes, np.ndarray]]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass
class CropRequest:
    """Where the sheets go, for how many of the first images, and the bpp their panels aim at."""
    folder: Path
    images: int = 4
    target_bpp: float = 0.25


def sheet_entries(entries: list[Entry]) -> list[Entry]:
    """The codecs a sheet shows after the original: dcomp's lossy methods, then JPEG and WebP."""
    methods = [e for e in entries if e.kind == "method" and not e.lossless]
    return methods + [e for name in CLASSICAL_PANELS for e in entries if e.name == name and e.kind == "classical"]


def nearest_point(points: list[dict], image: str, codec: str, target_bpp: float) -> dict | None:
    """The measured lossy point of `codec` on `image` whose bpp is nearest `target_bpp` (None if none)."""
    candidates = [p for p in points if p["image"] == image and p["codec"] == codec
                  and "error" not in p and not p.get("lossless")]
    return min(candidates, key=lambda p: abs(p["bpp"] - target_bpp), default=None)


def centre_crop(image: np.ndarray, side: int = CROP_SIDE) -> np.ndarray:
    """The central side x side pixels of an (H, W, ...) image (all of a side that is shorter)."""
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top:top + side, left:left + side]


def _to_pil(image: np.ndarray) -> Image.Image:
    """An (H, W, C) uint8 image as Pillow RGB (greyscale repeated, alpha dropped)."""
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")


def panel(image: np.ndarray, lines: list[str], font: Font) -> Image.Image:
    """One column of a sheet: the label lines, then the (H, W, C) crop below them."""
    crop = _to_pil(image)
    zoom = max(1, MIN_PANEL_SIDE // max(crop.size))
    crop = crop.resize((crop.width * zoom, crop.height * zoom), Image.Resampling.NEAREST)
    text_width = max(ImageDraw.Draw(crop).textlength(line, font=font) for line in lines)
    label_height = 2 * MARGIN + LINE_HEIGHT * len(lines)
    out = Image.new("RGB", (max(crop.width, int(text_width) + 2 * MARGIN), label_height + crop.height), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * LINE_HEIGHT), line, fill=INK, font=font)
    out.paste(crop, ((out.width - crop.width) // 2, label_height))
    return out


def sheet(panels: list[Image.Image]) -> Image.Image:
    """The panels side by side, top-aligned, GAP pixels apart."""
    out = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), max(p.height for p in panels)),
                    BACKGROUND)
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + GAP
    return out


def sheet_path(folder: Path, image_name: str) -> Path:
    """crops-NAME.png, NAME the image's name with anything but letters, digits, - and _ as _
    (the extension too: img.png and img.jpg must not share a sheet)."""
    return folder / f"crops-{re.sub(r'[^A-Za-z0-9_-]+', '_', image_name)}.png"


def _codec_panel(entry: Entry, image: np.ndarray, point: dict, round_trip: RoundTrip, font: Font) -> Image.Image:
    data, decoded = round_trip(entry, image, point["setting"])
    h, w = image.shape[:2]
    lines = [f"{entry.name} q{point['setting']}",
             f"{metrics.bits_per_pixel(len(data), w, h):.3f} bpp, {metrics.psnr(image, decoded):.2f} dB"]
    return panel(centre_crop(decoded), lines, font)


def write_sheets(images: list[BenchImage], points: list[dict], entries: list[Entry], round_trip: RoundTrip,
                 request: CropRequest) -> list[Path]:
    """One sheet per image of the first `request.images` (replacing a sheet of the same name);
    returns the paths written. OSError (the folder cannot be made or written) is the caller's."""
    shown = sheet_entries(entries)
    font = default_font(FONT_SIZE)
    request.folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images[:request.images]:
        pixels = image.load()
        panels = [panel(centre_crop(pixels), ["original", image.name], font)]
        for entry in shown:
            point = nearest_point(points, image.name, entry.name, request.target_bpp)
            if point is not None:
                panels.append(_codec_panel(entry, pixels, point, round_trip, font))
        path = sheet_path(request.folder, image.name)
        sheet(panels).save(path)
        written.append(path)
    return written
