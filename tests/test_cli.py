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
    proc = run_cli("compress", "in.png")  # mlp, lossless, is the default method
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    [line] = stderr_lines(proc)  # one summary line
    size = (tmp_path / "in.dcz").stat().st_size
    assert line.startswith("in.png -> in.dcz: ") and f"{size:,} bytes" in line and "bpp" in line and "mlp" in line
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


@pytest.mark.parametrize("args", [("compress",), ("compress", "in.png", "-m", "mlp", "--bogus"),
                                  ("bogus",), ("compress", "in.png", "-q")])
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
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON Lines
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
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    mlp = next(r for r in rows if r["method"] == "mlp")
    assert mlp["id"] == 1 and mlp["kind"] == "lossless" and len(mlp["model_id"]) == 8
    assert mlp["qualities"] is None and mlp["default_quality"] is None
    lossy = next(r for r in rows if r["method"] == "cnn-ae")
    assert lossy["qualities"] == list(range(1, 9)) and lossy["default_quality"] == 4


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
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[0])["model_id"] is None


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


# ---------------------------------------------------------------- what a new user tries first

def test_version_and_short_help(run_cli):
    for flag in ("--version", "-V"):
        proc = run_cli(flag)
        assert proc.returncode == 0 and proc.stdout.decode().startswith(f"dcomp {dcomp.__version__}")
    for command in ((), ("compress",), ("decompress",), ("info",), ("methods",), ("bench",), ("train", "mlp")):
        proc = run_cli(*command, "-h", env={"COLUMNS": "80"})
        text = proc.stdout.decode()
        assert proc.returncode == 0 and "Usage: dcomp" in text, command
        assert "Example" in text, command  # every command shows how it is used
        assert "<bool>" not in text, command  # flags take no value


def test_quality_help_says_range_direction_and_default(run_cli):
    text = " ".join(run_cli("compress", "--help", env={"COLUMNS": "200"}).stdout.decode().split())
    assert "1..8" in text and "smallest" in text and "best" in text and "default 4" in text


def test_shell_completion_is_offered(run_cli):
    proc = run_cli(env={"_DCOMP_COMPLETE": "complete_bash", "COMP_WORDS": "dcomp decomp", "COMP_CWORD": "1"})
    assert proc.returncode == 0 and "decompress" in proc.stdout.decode()


def test_lossy_method_defaults_to_middle_quality(tmp_path, run_cli, photo):
    proc = run_cli("compress", "in.png", "-m", "cnn-ae", "-o", "a.dcz")
    assert proc.returncode == 0, proc.stderr
    assert dcomp.info((tmp_path / "a.dcz").read_bytes())["quality"] == 4
    [line] = stderr_lines(proc)
    assert "a.dcz" in line and "bpp" in line and "quality 4" in line


def test_quiet_silences_the_summary(tmp_path, run_cli, photo):
    for flag in ("--quiet", "-s"):
        proc = run_cli("compress", "in.png", "-o", f"x{flag}.dcz", flag)
        assert proc.returncode == 0 and stderr_lines(proc) == [], proc.stderr


def test_json_lines_one_record_per_input_always(tmp_path, run_cli, photo):
    shutil.copy(tmp_path / "in.png", tmp_path / "b.png")
    for inputs in (["in.png"], ["in.png", "b.png"]):
        proc = run_cli("compress", *inputs, "-o", f"out{len(inputs)}/", "--json")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.decode().splitlines()
        assert len(lines) == len(inputs)
        for line, name in zip(lines, inputs):
            record = json.loads(line)
            assert record["input"] == name and record["method"] == "mlp" and record["quality"] is None
            assert record["bytes"] == (tmp_path / record["output"]).stat().st_size
            assert record["bpp"] == pytest.approx(record["bytes"] * 8 / (33 * 21), abs=1e-3)
    proc = run_cli("decompress", "out1/in.dcz", "-o", "d.png", "--json")
    record = json.loads(proc.stdout)
    assert record["method"] == "mlp" and record["mode"] == "RGB" and (record["width"], record["height"]) == (33, 21)


def test_json_with_psnr_target_reports_the_psnr_reached(tmp_path, run_cli, photo):
    proc = run_cli("compress", "in.png", "-m", "cnn-ae", "--psnr", "25", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["method"] == "cnn-ae" and 1 <= record["quality"] <= 8 and record["psnr"] >= 25


def test_batch_into_new_folder_with_trailing_slash(tmp_path, run_cli, photo):
    shutil.copy(tmp_path / "in.png", tmp_path / "b.png")
    proc = run_cli("compress", "in.png", "b.png", "-o", "out/")
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "out") == ["b.dcz", "in.dcz"]
    proc = run_cli("decompress", "out/in.dcz", "-o", "decoded/")  # fuzzing finding 8: was a *file* 'decoded'
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "decoded").is_dir() and listing(tmp_path / "decoded") == ["in.png"]


def test_failed_batch_leaves_no_new_folder(tmp_path, run_cli):
    (tmp_path / "bad.png").write_text("not an image")
    assert run_cli("compress", "bad.png", "-o", "out/").returncode == 1
    assert listing(tmp_path) == ["bad.png"]


def test_same_name_inputs_are_refused_before_any_work(tmp_path, run_cli, photo):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(tmp_path / "in.png", tmp_path / folder / "x.png")
    line = assert_one_error_line(run_cli("compress", "a/x.png", "b/x.png", "-o", "out/", "--force"), 2)
    assert "a/x.png and b/x.png" in line
    assert not (tmp_path / "out").exists()


def test_decompress_beside_the_original_never_replaces_it(tmp_path, run_cli, photo):
    original = (tmp_path / "in.png").read_bytes()
    assert run_cli("compress", "in.png", "-m", "cnn-ae").returncode == 0
    line = assert_one_error_line(run_cli("decompress", "in.dcz"), 1)
    assert "in.png exists" in line and "-o" in line and "--force" in line
    assert (tmp_path / "in.png").read_bytes() == original


def test_binary_output_to_a_terminal_is_refused(tmp_path, photo):
    import os
    import pty
    import subprocess
    import sys

    from conftest import cli_env

    for extra, refused in (((), True), (("--force",), False)):
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([sys.executable, "-m", "dcomp", "compress", "in.png", "-o", "-", *extra],
                                  stdout=follower, stderr=subprocess.PIPE, cwd=tmp_path, env=cli_env(), timeout=120)
        finally:
            os.close(follower)
            os.close(leader)
        if refused:
            assert proc.returncode == 2 and b"terminal" in proc.stderr, proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr


def test_train_never_replaces_weights_without_force(tmp_path, run_cli):
    data = tmp_path / "photos"
    data.mkdir()
    (tmp_path / "mine.npz").write_bytes(b"precious weights")
    line = assert_one_error_line(run_cli("train", "mlp", "--data", "photos", "--out", "mine.npz"), 2)
    assert "mine.npz exists" in line and "--force" in line
    assert (tmp_path / "mine.npz").read_bytes() == b"precious weights"
    text = " ".join(run_cli("train", "mlp", "--help", env={"COLUMNS": "200"}).stdout.decode().split())
    assert "[default: trained/mlp.npz]" in text  # never the shipped weights/ by default


@pytest.mark.parametrize("suffix", [".jpg", ".jxl", ".avif"])
def test_decompress_to_shareable_formats(tmp_path, run_cli, photo, suffix):
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(photo))
    proc = run_cli("decompress", "a.dcz", "-o", "a" + suffix)
    if suffix == ".jxl":
        import imagecodecs

        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(imagecodecs.jpegxl_decode((tmp_path / "a.jxl").read_bytes()), photo)  # lossless
        return
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / ("a" + suffix)) as im:
        diff = np.abs(np.asarray(im.convert("RGB")).astype(int) - photo)
    assert diff.mean() < 4  # a high-quality re-encoding


def _png_with(tmp_path, photo, name, **info) -> None:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "hello")
    Image.fromarray(photo).save(tmp_path / name, pnginfo=meta, **info)


def test_dropped_metadata_is_reported(tmp_path, run_cli, photo):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _png_with(tmp_path, photo, "icc.png", icc_profile=icc)
    proc = run_cli("compress", "icc.png")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in stderr_lines(proc) if "warning" in line]
    assert len(warnings) == 1 and "ICC profile" in warnings[0] and "text" in warnings[0], proc.stderr
    assert stderr_lines(run_cli("compress", "icc.png", "-o", "q.dcz", "--quiet")) == []


def test_exif_orientation_is_applied_and_said(tmp_path, run_cli, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(photo).save(tmp_path / "r.jpg", exif=exif, quality=95)
    proc = run_cli("compress", "r.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    assert any("orientation" in line for line in stderr_lines(proc)), proc.stderr
    assert np.asarray(dcomp.decompress((tmp_path / "r.dcz").read_bytes())).shape == (33, 21, 3)  # rotated


def test_animated_gif_says_only_first_frame(tmp_path, run_cli, photo):
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    proc = run_cli("compress", "anim.gif")
    assert proc.returncode == 0, proc.stderr
    assert any("2 frames" in line and "first" in line for line in stderr_lines(proc)), proc.stderr


def test_pixel_limit_is_checked_before_decoding(tmp_path, run_cli, photo):
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))  # 900 Mpixels declared
    line = assert_one_error_line(run_cli("compress", "bomb.png"), 1)
    assert "over the limit" in line and "--max-pixels" in line
    line = assert_one_error_line(run_cli("compress", "in.png", "--max-pixels", "100"), 1)
    assert "33x21" in line
    assert run_cli("compress", "in.png", "--max-pixels", "693").returncode == 0
    line = assert_one_error_line(run_cli("decompress", "in.dcz", "-o", "x.png", "--max-pixels", "100"), 1)
    assert "over the limit" in line
    assert listing(tmp_path) == ["bomb.png", "in.dcz", "in.png"]
