"""End-to-end runs of `dcomp bench` on a tiny folder, and its resume/interrupt behaviour."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcomp.bench import report, runner

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, src in enumerate(sorted(FIXTURES.glob("*.png"))[:2]):
        Image.open(src).convert("RGB").save(folder / f"img{i}.png")
    return folder


def _config(folder: Path, **kw) -> runner.BenchConfig:
    return runner.BenchConfig(str(folder), kw.pop("methods", ["mlp"]), kw.pop("codecs", ["png", "jpeg", "webp"]),
                              **kw)


def test_run_and_report(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    points = runner.run(_config(tiny_folder), out, log=lambda m: None)
    summary = report.build(points, out, "tiny")
    assert summary["lossless"]["mlp"]["exact"] and summary["lossless"]["png"]["exact"]
    assert summary["lossless"]["mlp"]["bpsp"] < summary["lossless"]["png"]["bpsp"]
    jpeg = summary["curves"]["jpeg"]
    assert len(jpeg) == 19 and all(p["images"] == 2 for p in jpeg)
    assert [p["bpp"] for p in jpeg] == sorted(p["bpp"] for p in jpeg)
    assert jpeg[-1]["psnr"] > jpeg[0]["psnr"] + 8  # quality 95 is far better than quality 5
    assert summary["bd_rate_psnr"]["jpeg"]["jpeg"] == pytest.approx(0, abs=1e-9)
    assert summary["bd_rate_psnr"]["webp"]["jpeg"] < 0  # WebP beats JPEG on photographs
    for name in ("points.jsonl", "points.csv", "summary.json", "settings.json", "report.md", "rd-psnr.png",
                 "rd-psnr.svg", "rd-ms-ssim.png"):
        assert (out / name).stat().st_size > 0, name
    settings = json.loads((out / "settings.json").read_text())
    assert settings["versions"]["numpy"] and settings["images"] == 2
    assert "| mlp |" in (out / "report.md").read_text()


def test_interrupt_keeps_points_and_resume_finishes(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "res"
    real = runner.measure_image
    calls = []

    def interrupted(name, *args, **kw):
        if calls:
            raise KeyboardInterrupt
        calls.append(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(runner, "measure_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(_config(tiny_folder, codecs=["png"]), out, log=lambda m: None)
    kept = (out / "points.jsonl").read_text().splitlines()
    assert len(kept) == 2  # mlp and png on the first image survived the interrupt
    monkeypatch.setattr(runner, "measure_image", real)
    points = runner.run(_config(tiny_folder, codecs=["png"]), out, resume=True, log=lambda m: None)
    assert len(points) == 4 and {p["image"] for p in points} == {"img0.png", "img1.png"}


def test_cli_bench_json(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "dcomp", "bench", "--dataset", str(tiny_folder), "--methods", "mlp",
                           "--codecs", "png,jpeg", "--limit", "1", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary["lossless"]) == {"mlp", "png"} and "jpeg" in summary["curves"]


def test_cli_bench_unknown_codec_is_usage_error(tiny_folder: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dcomp", "bench", "--dataset", str(tiny_folder), "--codecs", "gif"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("dcomp: error: unknown codec") and len(proc.stderr.strip().splitlines()) == 1


def test_cli_bench_missing_dataset(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dcomp", "bench", "--dataset", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "res")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_jobs_two_matches_serial(tiny_folder: Path, tmp_path: Path) -> None:
    serial = runner.run(_config(tiny_folder, codecs=["png"]), tmp_path / "a", log=lambda m: None)
    parallel = runner.run(_config(tiny_folder, codecs=["png"], jobs=2), tmp_path / "b", log=lambda m: None)
    key = lambda p: (p["image"], p["codec"])  # noqa: E731
    assert [(key(p), p["bytes"]) for p in sorted(serial, key=key)] == \
        [(key(p), p["bytes"]) for p in sorted(parallel, key=key)]
    assert np.all([p["exact"] for p in parallel])
