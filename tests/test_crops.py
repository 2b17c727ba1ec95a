"""`dcomp bench --save-crops`: which codecs and settings a sheet shows, what its panels hold, and
runs on the fixture crops with the classical codecs and cnn-ae."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcomp import metrics
from dcomp.bench import crops, runner
from dcomp.bench.crops import CropRequest
from dcomp.datasets import BenchImage
from dcomp.bench.runner import Entry

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, src in enumerate(sorted(FIXTURES.glob("*.png"))):
        Image.open(src).convert("RGB").save(folder / f"img{i}.png")
    return folder


ENTRIES = [Entry("mlp", "method", True, [None]), Entry("cnn-ae", "method", False, [1, 2]),
           Entry("webp", "classical", False, [50]), Entry("png", "classical", True, [None]),
           Entry("jpeg", "classical", False, [50]), Entry("jpeg2000", "classical", False, [0.5])]


def test_a_sheet_shows_the_lossy_methods_then_jpeg_then_webp() -> None:
    assert [e.name for e in crops.sheet_entries(ENTRIES)] == ["cnn-ae", "jpeg", "webp"]


def test_nearest_point_is_the_measured_bpp_nearest_the_target() -> None:
    points = [{"image": "a", "codec": "jpeg", "lossless": False, "setting": q, "bpp": b}
              for q, b in ((10, 0.1), (30, 0.3), (60, 0.7))]
    points += [{"image": "b", "codec": "jpeg", "lossless": False, "setting": 5, "bpp": 0.25},
               {"image": "a", "codec": "jpeg", "setting": 20, "error": "failed"}]
    assert crops.nearest_point(points, "a", "jpeg", 0.25)["setting"] == 30
    assert crops.nearest_point(points, "a", "jpeg", 0.6)["setting"] == 60
    assert crops.nearest_point(points, "a", "webp", 0.25) is None


def test_centre_crop() -> None:
    img = np.arange(300 * 400).reshape(300, 400)
    crop = crops.centre_crop(img)
    assert crop.shape == (256, 256) and crop[0, 0] == img[22, 72]
    assert crops.centre_crop(img[:40, :50]).shape == (40, 50)  # smaller than the crop: whole image


def test_sheet_names_keep_images_apart(tmp_path: Path) -> None:
    assert crops.sheet_path(tmp_path, "kodim01") == tmp_path / "crops-kodim01.png"
    assert crops.sheet_path(tmp_path, "a.png") != crops.sheet_path(tmp_path, "a.jpg")
    assert crops.sheet_path(tmp_path, "../x y.png").parent == tmp_path


def _recording_panels(monkeypatch) -> list:
    """Make crops.panel record (label lines, panel image) of every panel it draws."""
    made = []
    real_panel = crops.panel

    def recording(img, lines, font):
        made.append((lines, real_panel(img, lines, font)))
        return made[-1][1]

    monkeypatch.setattr(crops, "panel", recording)
    return made


def test_write_sheets_lays_out_labelled_panels(tmp_path: Path, monkeypatch) -> None:
    image = np.asarray(Image.open(FIXTURES / "kodim03_64x48.png").convert("RGB"))
    points = [{"image": "k", "codec": name, "lossless": False, "setting": 1, "bpp": 0.3}
              for name in ("cnn-ae", "jpeg", "webp")]

    def inverted(entry, img, setting):  # a stand-in codec: 100 bytes, every sample inverted
        return bytes(100), 255 - img

    made = _recording_panels(monkeypatch)
    [path] = crops.write_sheets([BenchImage("k", image)], points, ENTRIES, inverted, CropRequest(tmp_path / "s"))
    assert path == tmp_path / "s" / "crops-k.png"
    label = f"{800 / (64 * 48):.3f} bpp, {metrics.psnr(image, 255 - image):.2f} dB"
    assert [lines for lines, _ in made] == [["original", "k"]] + [[f"{name} q1", label]
                                                                 for name in ("cnn-ae", "jpeg", "webp")]
    sheet = np.asarray(Image.open(path))
    zoomed = image.repeat(2, 0).repeat(2, 1)  # 64x48 is enlarged twice, to MIN_PANEL_SIDE
    top = 2 * crops.MARGIN + 2 * crops.LINE_HEIGHT  # two label lines
    x = 0
    for (_, made_panel), expected in zip(made, [zoomed] + [255 - zoomed] * 3):
        p = np.asarray(made_panel)
        np.testing.assert_array_equal(sheet[:p.shape[0], x:x + p.shape[1]], p)
        left = (p.shape[1] - 128) // 2  # the crop is centred under its label
        np.testing.assert_array_equal(p[top:, left:left + 128], expected)
        x += p.shape[1] + crops.GAP
    assert sheet.shape == (top + 96, x - crops.GAP, 3)


def test_run_writes_sheets_of_the_nearest_points(fixture_folder: Path, tmp_path: Path, monkeypatch) -> None:
    made = _recording_panels(monkeypatch)
    config = runner.BenchConfig(str(fixture_folder), ["cnn-ae"], ["jpeg", "webp", "png", "jpeg2000"], [1, 2], limit=2)
    request = CropRequest(tmp_path / "crops", images=1, target_bpp=1.0)
    logged = []
    points = runner.run(config, tmp_path / "res", log=logged.append, crop_request=request)
    assert sorted(p.name for p in request.folder.iterdir()) == ["crops-img0_png.png"]
    assert logged[-1] == f"crop sheets in {request.folder}/ (crops-img0_png.png)"
    labels = [lines for lines, _ in made]
    assert [lines[0].split()[0] for lines in labels] == ["original", "cnn-ae", "jpeg", "webp"]
    for lines, codec in zip(labels[1:], ("cnn-ae", "jpeg", "webp")):
        chosen = crops.nearest_point(points, "img0.png", codec, 1.0)
        # encoded again for the sheet, the chosen setting gives the measured file and pixels
        assert lines == [f"{codec} q{chosen['setting']}", f"{chosen['bpp']:.3f} bpp, {chosen['psnr']:.2f} dB"]


def test_cli_save_crops(fixture_folder: Path, tmp_path: Path, run_cli) -> None:
    out, sheets = tmp_path / "res", tmp_path / "sheets"
    proc = run_cli("bench", "--dataset", str(fixture_folder), "--methods", "cnn-ae", "--qualities", "1,2", "--codecs",
                   "jpeg,webp", "--out", str(out), "--save-crops", str(sheets), "--crops", "2", "--crop-bpp", "0.5",
                   timeout=300)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 0, lines
    assert sorted(p.name for p in sheets.iterdir()) == ["crops-img0_png.png", "crops-img1_png.png"]
    assert f"crop sheets in {sheets}/ (crops-img0_png.png, crops-img1_png.png)" in lines
    assert lines[-1].startswith(f"results in {out}/")
    with Image.open(sheets / "crops-img1_png.png") as sheet:  # 40x40, enlarged 3x, in 4 panels
        assert sheet.mode == "RGB" and sheet.height > 120 and sheet.width >= 4 * 120 + 3 * crops.GAP


@pytest.mark.parametrize("args, message", [(("--crops", "0"), "--crops and --crop-bpp must be positive"),
                                           (("--crop-bpp", "-1"), "--crops and --crop-bpp must be positive"),
                                           (("--save-crops", "points.txt"), "is not a folder")])
def test_cli_save_crops_usage_errors(fixture_folder: Path, tmp_path: Path, run_cli, args, message) -> None:
    (tmp_path / "points.txt").write_text("a file")
    proc = run_cli("bench", "--dataset", str(fixture_folder), "--methods", "mlp", "--codecs", "png",
                   "--out", str(tmp_path / "res"), *args, cwd=tmp_path)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "res").exists()
