"""Training images shared by the trainers: the hold-out split, photo crops, tensors."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcomp.imageio import list_images, load_rgb

HOLD_OUT_FRACTION = 10  # the last tenth of a folder (at least one image) is validation, never trained on
DOWNSCALE = 0.6  # photos also at this size: closer to the detail density of smaller images


def split(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """(training paths, validation paths) of a folder of photographs, the same for every trainer."""
    paths = list_images(data_dir)
    if len(paths) < 2:
        raise ValueError(f"need at least 2 training images in {data_dir}")
    n_val = max(1, len(paths) // HOLD_OUT_FRACTION)
    return paths[:-n_val], paths[-n_val:]


def photos(paths: list[Path], log) -> list[np.ndarray]:
    """Each photo at full size and at DOWNSCALE."""
    from PIL import Image
    out = []
    for p in paths:
        a = load_rgb(p)
        out.append(a)
        img = Image.fromarray(a)
        size = (int(a.shape[1] * DOWNSCALE), int(a.shape[0] * DOWNSCALE))
        out.append(np.asarray(img.resize(size, Image.LANCZOS)))
    log(f"loaded {len(paths)} photos ({sum(x.size for x in out) / 3e6:.1f} Mpixel with their {DOWNSCALE}x copies)")
    return out


def center_crops(paths: list[Path], size: int, multiple: int = 8) -> list[np.ndarray]:
    """The central size x size crop of each image (where a side is shorter, as much of it as
    is a whole number of `multiple`s: the transforms work on whole blocks)."""
    out = []
    for p in paths:
        a = load_rgb(p)
        h, w = (min(size, n) // multiple * multiple for n in a.shape[:2])
        y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        out.append(a[y0:y0 + h, x0:x0 + w])
    return out


def random_crops(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random size x size crops, each from a random image, mirrored half of the time."""
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        a = images[rng.integers(len(images))]
        y = rng.integers(0, a.shape[0] - size + 1)
        x = rng.integers(0, a.shape[1] - size + 1)
        c = a[y:y + size, x:x + size]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        out[i] = c
    return out


def to_tensor(batch: np.ndarray):
    """(N, H, W, 3) uint8 to a (N, 3, H, W) float tensor in 0..1."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class TrainingSet:
    train_paths: list[Path]
    val_paths: list[Path]
    photos: list[np.ndarray]  # to draw training crops from
    val_images: list[np.ndarray]  # central crops of the held-out photos
    rng: np.random.Generator


def prepare(data_dir: Path, val_crop: int, seed: int, resume: bool, threads: int, log,
            extra: Path | None = None, multiple: int = 8) -> TrainingSet:
    """What every lossy trainer starts with: torch threads and seed, the split, the photos.
    `extra`: a second folder, split the same way (its validation part is held out too)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # A resumed run must not replay the crops of the first one.
    rng = np.random.default_rng(seed + int(time.time()) if resume else seed)
    train_paths, val_paths = split(data_dir)
    if extra is not None:
        extra_train, extra_val = split(extra)
        train_paths, val_paths = train_paths + extra_train, val_paths + extra_val
    return TrainingSet(train_paths, val_paths, photos(train_paths, log), center_crops(val_paths, val_crop, multiple), rng)
