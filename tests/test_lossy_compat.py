"""Files written before the lossy building blocks were split out still come out byte for byte.

tests/fixtures/pre-refactor holds .dcz files made by the code of commit 4c6e5b3 from the real
fixture crops, and what that code decoded them to. Today's encoder must write the same bytes
(same weights, same image, same quality) and today's decoder must give the same pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcomp
from conftest import FIXTURES

OLD = FIXTURES / "pre-refactor"
CASES = sorted(OLD.glob("*.dcz"))


def _source(path: Path) -> np.ndarray:
    name = path.name.split(".")[0]  # e.g. kodim23-RGBA
    crop, _, mode = name.partition("-")
    file = next(FIXTURES.glob(f"{crop}_*.png"))
    with Image.open(file) as im:
        rgb = np.asarray(im.convert("RGB"))
    if mode == "L":
        with Image.open(file) as im:
            return np.asarray(im.convert("L"))
    if mode == "RGBA":
        alpha = (np.arange(rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]) % 256).astype(np.uint8)
        return np.dstack([rgb, alpha])
    return rgb


def test_fixtures_are_there():
    assert len(CASES) == 5


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_old_files_decode_to_the_same_pixels(path):
    expected = np.load(path.with_suffix(".decoded.npy"))
    decoded = dcomp.decompress(path.read_bytes())
    assert decoded.shape == expected.shape
    # The synthesis runs in floats: another CPU may round a pixel differently, never by more than 1.
    assert np.abs(decoded.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_encoder_writes_the_same_bytes(path):
    info = dcomp.info(path.read_bytes())
    assert dcomp.compress(_source(path), info["method"], info["quality"]) == path.read_bytes()
