"""Files of a retired backbone still decode, pixel for pixel, and a file of unknown weights
fails with one clear line.

tests/fixtures/pre-refactor holds .dcz files made by the code of commit 4c6e5b3 (the block
backbone of cnn-ae and cnn-ae-ft) from the real fixture crops, and what that code decoded
them to. The header's model id is not the installed weights' any more: the registry finds the
kept weights in weights/legacy/<method>.<model id>.npz (SPEC.md, model id), whose codec must
give the same pixels and still write the same sections for the same image and quality.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcomp
from dcomp import container, registry
from dcomp.api import decompress_report
from dcomp.errors import WeightsError
from dcomp.imageio import to_array

from conftest import FIXTURES, assert_one_error_line

OLD = FIXTURES / "pre-refactor"
CASES = sorted(OLD.glob("*.dcz"))
UNKNOWN_ID = bytes.fromhex("01020304")


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


def _legacy_codec(data: bytes):
    header = container.parse(data).header
    name = dcomp.info(data)["method"]
    if not (registry.weights_dir() / "legacy").is_dir():
        pytest.skip(f"no weights/legacy folder in {registry.weights_dir()}")
    codec = registry.legacy(name, header.model_id)
    # Present, but not found or not matching: a regression, not a reason to skip.
    assert codec is not None, f"kept weights legacy/{name}.{header.model_id.hex()}.npz not usable"
    return codec


def _with_model_id(data: bytes, model_id: bytes) -> bytes:
    parsed = container.parse(data)
    parsed.header.model_id = model_id
    return container.Container(parsed.header, parsed.sections).to_bytes()


def test_fixtures_are_there():
    assert len(CASES) == 5


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_old_files_decode_to_the_same_pixels(path):
    data = path.read_bytes()
    codec = _legacy_codec(data)
    assert codec.model_id() == container.parse(data).header.model_id
    expected = np.load(path.with_suffix(".decoded.npy"))
    report = decompress_report(data)
    assert report.method == report.decoder == dcomp.info(data)["method"]
    assert report.image.shape == expected.shape
    # The synthesis runs in floats: another CPU may round a pixel differently, never by more than 1.
    assert np.abs(report.image.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_legacy_encoder_writes_the_same_sections(path):
    """The retired codec with its kept weights is the old encoder too: same image, same
    quality, same section payloads (today's cnn-ae writes the new backbone's instead)."""
    data = path.read_bytes()
    codec = _legacy_codec(data)
    image, _ = to_array(_source(path))  # (H, W, channels), as compress hands it to the codec
    assert codec.encode(image, dcomp.info(data)["quality"], "cpu") == container.parse(data).sections


def test_unknown_model_id_fails_with_one_line(run_cli, tmp_path):
    """Neither the installed weights nor any kept in weights/legacy: one WeightsError naming
    the file's model id, from the API and as one line from the CLI."""
    data = _with_model_id(CASES[0].read_bytes(), UNKNOWN_ID)
    method = dcomp.info(data)["method"]
    if not (registry.weights_dir() / registry.METHODS[method][3]).is_file():
        pytest.skip(f"no {method} weights installed")
    with pytest.raises(WeightsError, match=f"other {method} weights \\(model id 01020304, .*none kept in weights/legacy"):
        dcomp.decompress(data)
    (tmp_path / "unknown.dcz").write_bytes(data)
    proc = run_cli("decompress", "unknown.dcz", "-o", "out.png", env={"DCOMP_WEIGHTS_DIR": str(registry.weights_dir())})
    line = assert_one_error_line(proc, 1)
    assert "01020304" in line and method in line
    assert not (tmp_path / "out.png").exists()


def test_renamed_legacy_weights_are_not_used(tmp_path, monkeypatch, fresh_registry):
    """Kept weights found under another file's model id (renamed, or damaged) would decode
    garbage: the registry checks their own id and refuses them."""
    data = CASES[0].read_bytes()
    header = container.parse(data).header
    method = dcomp.info(data)["method"]
    source = registry.weights_dir()
    kept = source / "legacy" / f"{method}.{header.model_id.hex()}.npz"
    if not kept.is_file() or not (source / registry.METHODS[method][3]).is_file():
        pytest.skip("needs the installed and the kept weights")
    (tmp_path / "legacy").mkdir()
    shutil.copyfile(source / registry.METHODS[method][3], tmp_path / registry.METHODS[method][3])
    shutil.copyfile(kept, tmp_path / "legacy" / f"{method}.{UNKNOWN_ID.hex()}.npz")
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))
    assert registry.legacy(method, UNKNOWN_ID) is None
    with pytest.raises(WeightsError, match="model id 01020304"):
        dcomp.decompress(_with_model_id(data, UNKNOWN_ID))


def test_old_files_decode_without_the_current_weights(tmp_path, monkeypatch, fresh_registry):
    """Only the kept weights are needed for a file they made: a folder holding weights/legacy
    and nothing else still decodes the old files."""
    source = registry.weights_dir() / "legacy"
    if not source.is_dir():
        pytest.skip(f"no weights/legacy folder in {registry.weights_dir()}")
    shutil.copytree(source, tmp_path / "legacy")
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))
    path = next(p for p in CASES if ".cnn-ae." in p.name)
    decoded = dcomp.decompress(path.read_bytes())
    assert np.abs(decoded.astype(int) - np.load(path.with_suffix(".decoded.npy"))).max() <= 1
