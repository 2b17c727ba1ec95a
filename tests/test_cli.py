"""The `dcomp` command line, run as a subprocess (`python -m dcomp`) in a temporary folder."""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import dcomp
from conftest import FIXTURES, assert_one_error_line, stderr_lines

PHOTO = "kodim23_33x21.png"


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()


@pytest.fixture
def photo(tmp_path):
    """A fixture photo crop copied into the working folder as in.png; returns its pixels."""
    shutil.copy(FIXTURES / PHOTO, tmp_path / "in.png")
    return png_pixels((tmp_path / "in.png").read_bytes())


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- round trips

def test_compress_decompress_round_trip(tmp_path, run_cli, photo):
    proc = run_cli("compress", "in.png", "-m", "mlp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and stderr_lines(proc) == []
    assert listing(tmp_path) == ["in.dcz", "in.png"]
    data = (tmp_path / "in.dcz").read_bytes()
    assert data == dcomp.compress(photo)  # same bytes as the API, in another process
    proc = run_cli("decompress", "in.dcz", "-o", "out.png")
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path) == ["in.dcz", "in.png", "out.png"]
    assert np.array_equal(png_pixels((tmp_path / "out.png").read_bytes()), photo)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_round_trip_other_modes(tmp_path, run_cli, mode):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (7, 9, len(mode)), dtype=np.uint8)
    Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode).save(tmp_path / "a.png")
    assert run_cli("compress", "a.png", "-m", "mlp", "-o", "a.dcz").returncode == 0
    proc = run_cli("decompress", "a.dcz", "-o", "b.png")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "b.png") as im:
        assert im.mode == mode
        assert np.array_equal(np.asarray(im), arr[:, :, 0] if mode == "L" else arr)


def test_stdin_to_stdout_pipe(tmp_path, run_cli, photo):
    png = (tmp_path / "in.png").read_bytes()
    proc = run_cli("compress", "-", "-m", "mlp", input=png)
    assert proc.returncode == 0, proc.stderr
    assert stderr_lines(proc) == []
    dcz = proc.stdout
    assert dcz[:2] == b"\xdc\x5a"
    assert np.array_equal(dcomp.decompress(dcz), photo)  # stdout holds the file and nothing else
    assert dcomp.info(dcz)["file_bytes"] == len(dcz)
    proc = run_cli("decompress", "-", input=dcz)
    assert proc.returncode == 0, proc.stderr
    assert stderr_lines(proc) == []
    assert proc.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(png_pixels(proc.stdout), photo)
    assert listing(tmp_path) == ["in.png"]


@pytest.mark.slow
def test_output_into_folder(tmp_path, run_cli, photo):
    (tmp_path / "out").mkdir()
    shutil.copy(tmp_path / "in.png", tmp_path / "second.png")
    proc = run_cli("compress", "in.png", "second.png", "-m", "mlp", "-o", "out")
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "out") == ["in.dcz", "second.dcz"]
    proc = run_cli("decompress", "out/in.dcz", "out/second.dcz", "-o", "out")
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "out") == ["in.dcz", "in.png", "second.dcz", "second.png"]
    assert np.array_equal(png_pixels((tmp_path / "out" / "second.png").read_bytes()), photo)


# ---------------------------------------------------------------- failures and batches

def test_batch_with_one_bad_input(tmp_path, run_cli, photo):
    shutil.copy(tmp_path / "in.png", tmp_path / "a.png")
    (tmp_path / "notes.png").write_text("this is not an image\n")
    proc = run_cli("compress", "a.png", "notes.png", "in.png", "-m", "mlp")
    assert proc.returncode == 1
    text = proc.stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in stderr_lines(proc) if line.startswith("dcomp: error:")]
    assert len(errors) == 1 and "notes.png" in errors[0], text
    assert listing(tmp_path) == ["a.dcz", "a.png", "in.dcz", "in.png", "notes.png"]
    for name in ("a.dcz", "in.dcz"):
        assert np.array_equal(dcomp.decompress((tmp_path / name).read_bytes()), photo)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge 8-bit gray image but holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def test_batch_goes_on_after_decompression_bomb(tmp_path, run_cli, photo):
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 20000))
    proc = run_cli("compress", "huge.png", "in.png", "-m", "mlp")
    assert proc.returncode == 1
    errors = [line for line in stderr_lines(proc) if line.startswith("dcomp: error:")]
    assert len(errors) == 1 and "huge.png" in errors[0] and "internal error" not in errors[0], errors
    assert (tmp_path / "in.dcz").exists()


def test_large_image_header_gives_one_line(tmp_path, run_cli):
    (tmp_path / "big.png").write_bytes(png_header_only(10000, 10000))  # 100 Mpixels, data missing
    line = assert_one_error_line(run_cli("compress", "big.png", "-m", "mlp"), 1)
    assert "big.png" in line


@pytest.mark.slow
def test_output_folder_missing(tmp_path, run_cli, photo):
    assert_one_error_line(run_cli("compress", "in.png", "-m", "mlp", "-o", "nodir/out.dcz"), 1)
    assert listing(tmp_path) == ["in.png"]


def test_missing_input_file(tmp_path, run_cli):
    line = assert_one_error_line(run_cli("compress", "nope.png", "-m", "mlp"), 1)
    assert "nope.png" in line
    assert listing(tmp_path) == []


def test_refuses_to_overwrite_then_force(tmp_path, run_cli, photo):
    (tmp_path / "in.dcz").write_bytes(b"precious")
    line = assert_one_error_line(run_cli("compress", "in.png", "-m", "mlp"), 1)
    assert "in.dcz" in line and "--force" in line
    assert (tmp_path / "in.dcz").read_bytes() == b"precious"
    assert listing(tmp_path) == ["in.dcz", "in.png"]
    proc = run_cli("compress", "in.png", "-m", "mlp", "--force")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(dcomp.decompress((tmp_path / "in.dcz").read_bytes()), photo)
    assert listing(tmp_path) == ["in.dcz", "in.png"]


def test_decompress_refuses_to_overwrite(tmp_path, run_cli, photo):
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(photo))
    (tmp_path / "a.png").write_bytes(b"precious")
    assert_one_error_line(run_cli("decompress", "a.dcz"), 1)
    assert (tmp_path / "a.png").read_bytes() == b"precious"
    assert run_cli("decompress", "a.dcz", "--force").returncode == 0
    assert np.array_equal(png_pixels((tmp_path / "a.png").read_bytes()), photo)


def test_unknown_method_is_usage_error(tmp_path, run_cli, photo):
    line = assert_one_error_line(run_cli("compress", "in.png", "-m", "nosuchmethod"), 2)
    assert "nosuchmethod" in line and "mlp" in line
    assert listing(tmp_path) == ["in.png"]


@pytest.mark.parametrize("args", [
    pytest.param(("compress", "in.png", "in.png", "-m", "mlp", "-o", "missing_folder/x.dcz"),  # -o not a folder
                 marks=pytest.mark.slow),
    pytest.param(("compress", "-", "in.png", "-m", "mlp"), marks=pytest.mark.slow),
    ("compress", "in.png", "-m", "mlp", "--json", "-o", "-"),
    pytest.param(("compress", "in.png", "-m", "mlp", "--device", "tpu"), marks=pytest.mark.slow),
])
def test_usage_errors_are_one_line(tmp_path, run_cli, photo, args):
    assert_one_error_line(run_cli(*args, input=b""), 2)
    assert listing(tmp_path) == ["in.png"]


@pytest.mark.parametrize("args", [("compress", "in.png"), ("compress", "in.png", "-m", "mlp", "--bogus"),
                                  ("bogus",)])
def test_click_usage_errors_are_one_line(tmp_path, run_cli, photo, args):
    assert_one_error_line(run_cli(*args), 2)


def test_json_output(tmp_path, run_cli, photo):
    proc = run_cli("compress", "in.png", "-m", "mlp", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["ok"] is True and record["input"] == "in.png" and record["output"] == "in.dcz"
    assert record["bytes"] == (tmp_path / "in.dcz").stat().st_size
    proc = run_cli("decompress", "in.dcz", "-o", "out.png", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["ok"] is True and (record["width"], record["height"]) == (33, 21)


def test_json_batch_reports_failures(tmp_path, run_cli, photo):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    proc = run_cli("compress", "in.png", "bad.png", "-m", "mlp", "--json")
    assert proc.returncode == 1
    records = json.loads(proc.stdout)
    assert [r["ok"] for r in records] == [True, False]
    assert "bad.png" in records[1]["error"]


def test_info_json(tmp_path, run_cli, photo):
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(photo))
    proc = run_cli("info", "a.dcz", "--json")
    assert proc.returncode == 0, proc.stderr
    fields = json.loads(proc.stdout)
    assert fields["method"] == "mlp" and (fields["width"], fields["height"]) == (33, 21)
    size = (tmp_path / "a.dcz").stat().st_size
    assert fields["bits_per_subpixel"] == pytest.approx(size * 8 / (33 * 21 * 3), abs=1e-3)
    proc = run_cli("info", "a.dcz")
    assert proc.returncode == 0 and b"bits_per_subpixel" in proc.stdout


def test_methods(run_cli):
    proc = run_cli("methods", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    mlp = next(r for r in rows if r["method"] == "mlp")
    assert mlp["id"] == 1 and mlp["kind"] == "lossless" and len(mlp["weights"]) == 8


def test_info_missing_file_names_it_once(run_cli):
    line = assert_one_error_line(run_cli("info", "nope.dcz"), 1)
    assert line.count("nope.dcz") == 1, line


def _rgba_dcz(tmp_path) -> np.ndarray:
    rng = np.random.default_rng(8)
    arr = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    (tmp_path / "rgba.dcz").write_bytes(dcomp.compress(arr))
    return arr


@pytest.mark.slow
def test_decompress_to_other_lossless_formats(tmp_path, run_cli, photo):
    (tmp_path / "rgb.dcz").write_bytes(dcomp.compress(photo))
    rgba = _rgba_dcz(tmp_path)
    for source, target, expected in (("rgb.dcz", "a.ppm", photo), ("rgba.dcz", "b.webp", rgba)):
        proc = run_cli("decompress", source, "-o", target)
        assert proc.returncode == 0, proc.stderr
        with Image.open(tmp_path / target) as im:
            assert np.array_equal(np.asarray(im), expected), target


@pytest.mark.parametrize("suffix", [".bmp", ".ppm"])
def test_decompress_rgba_to_format_without_alpha_is_not_silent(tmp_path, run_cli, suffix):
    rgba = _rgba_dcz(tmp_path)
    proc = run_cli("decompress", "rgba.dcz", "-o", "out" + suffix)
    if proc.returncode != 0:  # refusing is fine, as one line and without an output file
        assert_one_error_line(proc, 1)
        assert not (tmp_path / ("out" + suffix)).exists()
        return
    with Image.open(tmp_path / ("out" + suffix)) as im:
        assert np.array_equal(np.asarray(im), rgba)


# ---------------------------------------------------------------- weights

def test_missing_weights(tmp_path, run_cli, photo):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(photo))
    for args in (("compress", "in.png", "-m", "mlp"), ("decompress", "a.dcz")):
        line = assert_one_error_line(run_cli(*args, env={"DCOMP_WEIGHTS_DIR": str(empty)}), 1)
        assert "weights" in line
    assert listing(tmp_path) == ["a.dcz", "in.png", "no_weights"]
    proc = run_cli("methods", "--json", env={"DCOMP_WEIGHTS_DIR": str(empty)})
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["weights"] == "missing"


def test_file_made_with_other_weights(tmp_path, run_cli, photo, other_weights_dir):
    env = {"DCOMP_WEIGHTS_DIR": str(other_weights_dir)}
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(photo))  # installed weights
    line = assert_one_error_line(run_cli("decompress", "a.dcz", env=env), 1)
    assert "other" in line and "weights" in line
    assert not (tmp_path / "a.png").exists()
    # ...and the other way round: a file made with the other weights, read with the installed ones.
    assert run_cli("compress", "in.png", "-m", "mlp", "-o", "b.dcz", env=env).returncode == 0
    line = assert_one_error_line(run_cli("decompress", "b.dcz"), 1)
    assert "other" in line and "weights" in line
    proc = run_cli("decompress", "b.dcz", env=env)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(png_pixels((tmp_path / "b.png").read_bytes()), photo)


@pytest.mark.slow
def test_unreadable_weights(tmp_path, run_cli, photo):
    bad = tmp_path / "bad_weights"
    bad.mkdir()
    (bad / "mlp.npz").write_bytes(b"not a zip file")
    line = assert_one_error_line(run_cli("compress", "in.png", "-m", "mlp", env={"DCOMP_WEIGHTS_DIR": str(bad)}), 1)
    assert "weights" in line
