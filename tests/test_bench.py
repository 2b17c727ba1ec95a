"""End-to-end runs of `dcomp bench` on a tiny folder: results, resume/interrupt, the results
folder rules, clean failures, what the report writes, and the help text."""
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcomp import metrics
from dcomp.bench import report, runner
from dcomp.datasets import DatasetError, download
from dcomp.classical import CODECS

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
    summary, written = report.build(points, out, "tiny")
    assert summary["lossless"]["mlp"]["exact"] and summary["lossless"]["png"]["exact"]
    assert summary["lossless"]["mlp"]["bpsp"] < summary["lossless"]["png"]["bpsp"]
    jpeg = summary["curves"]["jpeg"]
    assert len(jpeg) == 19 and all(p["images"] == 2 for p in jpeg)
    assert [p["bpp"] for p in jpeg] == sorted(p["bpp"] for p in jpeg)
    assert jpeg[-1]["psnr"] > jpeg[0]["psnr"] + 8  # quality 95 is far better than quality 5
    assert 0 < jpeg[0]["haarpsi"] < jpeg[-1]["haarpsi"] < 1
    assert jpeg[0]["swd_patches"] > jpeg[-1]["swd_patches"] > 0
    assert summary["bd_rate_psnr"]["jpeg"]["jpeg"] == pytest.approx(0, abs=1e-9)
    assert summary["bd_rate_psnr"]["webp"]["jpeg"] < 0  # WebP beats JPEG on photographs
    for name in ("points.jsonl", "points.csv", "summary.json", "settings.json", "report.md", "lossless-bpsp.png",
                 "lossless-bpsp.svg"):
        assert (out / name).stat().st_size > 0, name
    # mlp is the only dcomp method measured, and lossless: no RD plot of the classical codecs alone
    assert not list(out.glob("rd-*"))
    assert sorted(p.name for p in written) == sorted(set(p.name for p in out.iterdir()) - {"points.jsonl",
                                                                                           "settings.json"})
    settings = json.loads((out / "settings.json").read_text())
    assert settings["versions"]["numpy"] and settings["images"] == 2
    md = (out / "report.md").read_text()
    assert "| mlp |" in md and "### jpeg" in md and "| setting | bpp | PSNR | HaarPSI | SWD patches |" in md
    header = (out / "points.csv").read_text().splitlines()[0].split(",")
    assert {"haarpsi", "swd_patches"} <= set(header)


def test_resume_loads_points_measured_before_the_perceptual_metrics(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    config = _config(tiny_folder, methods=[], codecs=["jpeg"])
    fresh = runner.run(config, out, log=lambda m: None)
    assert all(0 < p["haarpsi"] <= 1 and p["swd_patches"] >= 0 for p in fresh)
    # an older points file: the metrics absent, and the second image not measured yet
    old = [{k: v for k, v in p.items() if k not in report.PERCEPTUAL} for p in fresh if p["image"] == "img0.png"]
    (out / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in old))
    points = runner.run(config, out, resume=True, log=lambda m: None)
    assert len(points) == len(fresh) and all("haarpsi" in p for p in points if p["image"] == "img1.png")
    summary, written = report.build(points, out, "t")
    # a mean over img1 alone would not go with the bpp and PSNR of both images: missing instead
    assert all(c["haarpsi"] is None and c["swd_patches"] is None for c in summary["curves"]["jpeg"])
    assert "rd-psnr" in {p.stem for p in written} and "rd-haarpsi" not in {p.stem for p in written}
    assert "| 5 | " in (out / "report.md").read_text() and " | – | – |" in (out / "report.md").read_text()


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
    with pytest.raises(runner.Interrupted) as stop:  # a KeyboardInterrupt, carrying what was saved
        runner.run(_config(tiny_folder, codecs=["png"]), out, log=lambda m: None)
    kept = (out / "points.jsonl").read_text().splitlines()
    assert len(kept) == 2  # mlp and png on the first image survived the interrupt
    assert [json.loads(line) for line in kept] == stop.value.points
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


def _only_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """Exit `code` and a stderr of exactly one line, 'dcomp: error: ...' (no blank line either)."""
    lines = proc.stderr.decode("utf-8", "replace").splitlines()
    assert proc.returncode == code, (proc.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("dcomp: error: "), lines
    return lines[0]


def _bench(run_cli, folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("bench", "--dataset", str(folder), "--methods", "mlp", "--codecs", "png", "--out", str(out),
                   *extra)


def test_cli_bench_unknown_codec_is_usage_error(tiny_folder: Path, run_cli) -> None:
    line = _only_line(run_cli("bench", "--dataset", str(tiny_folder), "--codecs", "gif"), 2)
    assert line.startswith("dcomp: error: unknown codec")


def test_cli_bench_existing_results_need_resume_or_force(tiny_folder: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "res"
    assert _bench(run_cli, tiny_folder, out).returncode == 0
    before = (out / "points.jsonl").read_text()
    assert len(before.splitlines()) == 4  # mlp and png on 2 images

    line = _only_line(_bench(run_cli, tiny_folder, out, "--limit", "1"), 2)  # refused before any work
    assert str(out) in line and "--resume" in line and "--force" in line
    assert (out / "points.jsonl").read_text() == before
    _only_line(_bench(run_cli, tiny_folder, out, "--resume", "--force"), 2)

    resumed = _bench(run_cli, tiny_folder, out, "--resume")
    assert resumed.returncode == 0 and "resuming: 4 points" in resumed.stderr.decode()
    assert (out / "points.jsonl").read_text() == before  # nothing left to measure

    (out / "notes.txt").write_text("mine")
    assert _bench(run_cli, tiny_folder, out, "--force", "--limit", "1").returncode == 0
    assert {json.loads(x)["image"] for x in (out / "points.jsonl").read_text().splitlines()} == {"img0.png"}
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces the bench's files only

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _bench(run_cli, tiny_folder, empty, "--limit", "1").returncode == 0  # an empty folder is free


def test_force_removes_stale_results(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    out.mkdir()
    for name in ("points.jsonl", "summary.json", "rd-psnr.png", "rd-ms-ssim.svg"):
        (out / name).write_text("old\n")
    with pytest.raises(runner.OutDirError, match="already holds results"):
        runner.run(_config(tiny_folder, codecs=["png"], limit=1), out, log=lambda m: None)
    points = runner.run(_config(tiny_folder, codecs=["png"], limit=1), out, force=True, log=lambda m: None)
    assert len(points) == 2 and len((out / "points.jsonl").read_text().splitlines()) == 2
    assert not (out / "summary.json").exists() and not list(out.glob("rd-*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_runs_leave_no_folders(tmp_path: Path, run_cli) -> None:
    results = tmp_path / "results"
    _only_line(run_cli("bench", "--dataset", str(tmp_path / "nope"), "--out", str(results / "a")), 1)

    cache = tmp_path / "cache" / "dcomp"  # a download refused at once: neither cache nor results stay
    proc = run_cli("bench", "--dataset", "kodak", "--methods", "mlp", "--codecs", "png", "--data-dir", str(cache),
                   "--out", str(results / "b"), env={"DCOMP_KODAK_URL": f"http://127.0.0.1:{_free_port()}/"})
    assert "download of http://127.0.0.1" in _only_line(proc, 1)

    bad = tmp_path / "bad"  # a PNG whose header reads but whose pixels do not: fails while measuring
    bad.mkdir()
    (bad / "cut.png").write_bytes((FIXTURES / "kodim03_64x48.png").read_bytes()[:200])
    proc = _bench(run_cli, bad, results / "c")
    lines = proc.stderr.decode().splitlines()  # the run's "bad: 1 images, ..." line, then the error
    assert proc.returncode == 1 and all(line.strip() for line in lines), lines
    assert lines[-1].startswith("dcomp: error: ") and "cut.png" in lines[-1]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_failed_download_removes_the_folders_it_made(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="failed"):
        download(f"http://127.0.0.1:{_free_port()}/x.bin", tmp_path / "a" / "b" / "x.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_final_line_names_the_files_written(tiny_folder: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "res"
    proc = _bench(run_cli, tiny_folder, out, "--limit", "1")
    assert proc.returncode == 0
    last = proc.stderr.decode().splitlines()[-1]
    assert last.startswith(f"results in {out}/ (") and last.endswith(")")
    named = last[last.index("(") + 1:-1].split(", ")
    assert sorted(named) == sorted(p.name for p in out.iterdir() if p.name not in ("points.jsonl", "settings.json"))
    assert "lossless-bpsp.png" in named and not any(n.startswith("rd-") for n in named)


def test_jobs_two_matches_serial(tiny_folder: Path, tmp_path: Path) -> None:
    serial = runner.run(_config(tiny_folder, codecs=["png"]), tmp_path / "a", log=lambda m: None)
    parallel = runner.run(_config(tiny_folder, codecs=["png"], jobs=2), tmp_path / "b", log=lambda m: None)
    key = lambda p: (p["image"], p["codec"])  # noqa: E731
    assert [(key(p), p["bytes"]) for p in sorted(serial, key=key)] == \
        [(key(p), p["bytes"]) for p in sorted(parallel, key=key)]
    assert np.all([p["exact"] for p in parallel])


def _lossy(codec: str, setting, bpp: float, psnr: float, ms_ssim: float, haarpsi: float | None = None) -> dict:
    """A lossy point; without `haarpsi`, one measured before the perceptual metrics existed."""
    point = {"image": "a.png", "codec": codec, "kind": "method" if codec in ("cnn-ae",) else "classical",
             "lossless": False, "setting": setting, "bpp": bpp, "psnr": psnr, "ssim": 0.9, "ms_ssim": ms_ssim,
             "ms_ssim_scales": 5, "encode_s": 0.1, "decode_s": 0.1, "peak_mb": 50.0}
    if haarpsi is not None:
        point.update(haarpsi=haarpsi, swd_patches=10 * (1 - haarpsi))
    return point


def _lossless(codec: str, bpsp: float) -> dict:
    return {"image": "a.png", "codec": codec, "kind": "method" if codec == "mlp" else "classical",
            "lossless": True, "setting": None, "bpp": 3 * bpsp, "bpsp": bpsp, "exact": True, "encode_s": 0.1,
            "decode_s": 0.1, "peak_mb": 50.0}


JPEG = [_lossy("jpeg", q, b, p, m) for q, b, p, m in ((10, 0.5, 28.0, 0.9), (50, 1.0, 32.0, 0.99),
                                                      (90, 2.0, 38.0, 0.999))]
JPEG_H = [dict(p, haarpsi=h, swd_patches=s) for p, h, s in zip(JPEG, (0.8, 0.9, 0.97), (3.0, 1.0, 0.3))]
CNN_AE_H = [_lossy("cnn-ae", 1, 0.4, 29.0, 0.95, 0.85), _lossy("cnn-ae", 2, 0.8, 31.0, 0.98, 0.92)]


@pytest.mark.parametrize("points, plots", [
    ([_lossless("mlp", 3.0), _lossless("png", 4.0), *JPEG], {"lossless-bpsp"}),
    ([_lossy("cnn-ae", 1, 0.4, 29.0, 0.95), _lossy("cnn-ae", 2, 0.8, 31.0, 0.98), _lossless("png", 4.0), *JPEG],
     {"rd-psnr", "rd-ms-ssim"}),
    ([_lossless("mlp", 3.0), _lossy("cnn-ae", 1, 0.4, 29.0, 0.95), _lossy("cnn-ae", 2, 0.8, 31.0, 0.98), *JPEG],
     {"lossless-bpsp", "rd-psnr", "rd-ms-ssim"}),
    ([_lossless("png", 4.0), *JPEG], {"lossless-bpsp", "rd-psnr", "rd-ms-ssim"}),  # no dcomp method measured
    ([*CNN_AE_H, *JPEG_H], {"rd-psnr", "rd-ms-ssim", "rd-haarpsi"}),
    ([*JPEG_H], {"rd-psnr", "rd-ms-ssim", "rd-haarpsi"}),
    # cnn-ae's points predate HaarPSI: an rd-haarpsi plot would show JPEG alone
    ([_lossy("cnn-ae", 1, 0.4, 29.0, 0.95), *JPEG_H], {"rd-psnr", "rd-ms-ssim"}),
], ids=["lossless-method", "lossy-method", "both", "classical-only", "haarpsi", "haarpsi-classical-only",
        "haarpsi-without-the-method"])
def test_every_plot_shows_the_measured_dcomp_method(points, plots, tmp_path: Path) -> None:
    summary, written = report.build(points, tmp_path, "t")
    assert {p.stem for p in written if p.suffix in (".png", ".svg")} == plots
    assert all(p.exists() for p in written)
    md = (tmp_path / "report.md").read_text()
    assert all(f"({stem}.png)" in md for stem in plots)


def test_rebuild_removes_plots_that_no_longer_apply(tmp_path: Path) -> None:
    report.build([_lossless("png", 4.0), *JPEG], tmp_path, "t")
    assert (tmp_path / "rd-psnr.png").exists()
    report.build([_lossless("mlp", 3.0), *JPEG], tmp_path, "t")
    assert not list(tmp_path.glob("rd-*")) and (tmp_path / "lossless-bpsp.svg").exists()


def test_ms_ssim_db() -> None:
    assert metrics.ms_ssim_db(0.9) == pytest.approx(10.0)
    assert metrics.ms_ssim_db(0.999) == pytest.approx(30.0)
    assert metrics.ms_ssim_db(1.0) == metrics.MS_SSIM_DB_CAP  # identical images: capped, not infinite
    assert math.isfinite(metrics.ms_ssim_db(1 - 1e-15))


def test_ms_ssim_plot_is_in_db(tmp_path: Path, monkeypatch) -> None:
    drawn = {}

    def capture(fig, out_dir, stem):
        ax = fig.axes[0]
        drawn[stem] = (ax.get_ylabel(), {line.get_label(): list(line.get_ydata()) for line in ax.lines})
        return []

    monkeypatch.setattr(report, "_save", capture)
    report.plot_rd(report.curves(JPEG), tmp_path, "t")
    label, lines = drawn["rd-ms-ssim"]
    assert "dB" in label and "log10" in label
    assert lines["jpeg"] == pytest.approx([10.0, 20.0, 30.0])
    assert drawn["rd-psnr"][1]["jpeg"] == pytest.approx([28.0, 32.0, 38.0])
    assert "rd-haarpsi" not in drawn  # these points have no HaarPSI
    report.plot_rd(report.curves(JPEG_H), tmp_path, "t")
    assert drawn["rd-haarpsi"][1]["jpeg"] == pytest.approx([0.8, 0.9, 0.97])


@pytest.mark.parametrize("columns", ["80", "100"])
def test_cli_bench_help_is_not_cut(columns: str, run_cli) -> None:
    proc = run_cli("bench", "--help", env={"COLUMNS": columns})
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "…" not in text and all(len(line) <= int(columns) for line in text.splitlines())
    words = text.replace("│", " ").replace(",", " ").split()
    assert set(CODECS) <= set(words)  # every codec name whole, however the lines wrap
    assert "--dataset path/to/folder --methods mlp" in text and "--codecs png,webp-lossless --jobs 2" in text


def test_compare_pairs_each_image_with_the_base_at_the_same_setting():
    from dcomp.bench.compare import compare, markdown

    def point(codec, setting, image, psnr, swd, haarpsi):
        return {"codec": codec, "setting": setting, "image": image, "bpp": 0.5, "psnr": psnr,
                "swd_patches": swd, "haarpsi": haarpsi, "decode_s": 0.2}

    points = [point("base", 1, "a", 30.0, 2.0, 0.9), point("gan", 1, "a", 29.0, 1.5, 0.8),
              point("base", 1, "b", 31.0, 2.0, 0.9), point("gan", 1, "b", 30.5, 2.5, 0.95),
              point("gan", 2, "a", 33.0, 1.0, 0.9), {"codec": "gan", "setting": 1, "image": "c", "error": "x"}]
    [row] = compare(points, "base", ["gan"])  # setting 2 has no base point: no row
    assert (row["images"], row["swd_better"], row["haarpsi_better"]) == (2, 1, 1)
    assert row["psnr_drop_mean"] == pytest.approx(0.75) and row["psnr_drop_max"] == pytest.approx(1.0)
    assert "1 of 2" in markdown([row], "base")
