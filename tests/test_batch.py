"""`dcomp batch` on a local Dask cluster started here: 2 worker processes on the loopback
interface, no dashboard, every test bounded in time, the cluster always closed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcomp
from conftest import FIXTURE_NAMES, FIXTURES, cli_env, load_fixture
from dcomp.batch import plan
from dcomp.batch.plan import Item, PlanError

pytest.importorskip("distributed")

WORKERS = 2
TEST_TIMEOUT_S = 90  # a hung cluster fails its test instead of the whole run
WORKER_RESTART_TIMEOUT_S = 30


@contextmanager
def deadline(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def bounded():
    with deadline(TEST_TIMEOUT_S):
        yield


@pytest.fixture(scope="module")
def client():
    from dcomp.batch import cluster

    local = cluster.connect(None, WORKERS)
    with deadline(TEST_TIMEOUT_S):  # bounds the start only: the deadline of each test bounds the rest
        c = local.__enter__()
    try:
        yield c
    finally:
        local.__exit__(None, None, None)


@pytest.fixture
def tree(tmp_path) -> Path:
    """in/: the three fixture photos at the top and again two folders down, in/a/b/."""
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    for name in FIXTURE_NAMES:
        shutil.copy(FIXTURES / name, root / name)
        shutil.copy(FIXTURES / name, root / "a" / "b" / name)
    return root


def inputs(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.png"))}


def outputs(out: Path, suffix: str) -> dict[str, Path]:
    return {p.relative_to(out).with_suffix(".png").as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()
            and p.suffix == suffix}


def stray_files(out: Path) -> list[Path]:
    """Anything in the output tree that is neither an output nor a log (temporary files, say)."""
    return [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".dcz", ".png", ".jsonl")]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def log_records(path: str, event: str = "image") -> list[dict]:
    return [r for r in map(json.loads, Path(path).read_text().splitlines()) if r["event"] == event]


def job(command: str, source: Path, out: Path, **options):
    from dcomp.batch import run, worker

    task_size = options.pop("task_size", 2)
    return run.Job(command, source, out, worker.Options(**options), task_size=task_size)


def run_job(client, *args, on_task_done=None, **options):
    from dcomp.batch import run

    return run.run(job(*args, **options), client, quiet=True, on_task_done=on_task_done)


def assert_complete(root: Path, out: Path) -> None:
    """Every input has its .dcz, nothing else is there, and each decodes to the input's pixels."""
    written = outputs(out, ".dcz")
    assert sorted(written) == sorted(inputs(root))
    assert stray_files(out) == []
    for name, path in written.items():
        assert np.array_equal(dcomp.decompress(path.read_bytes()), pixels(root / name)), name


def signature(path: Path) -> tuple[int, int]:
    """Changes when a file is written again (a rename gives a new inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# ---------------------------------------------------------------- planning (no cluster)

def test_plan_mirrors_the_tree_and_refuses_collisions(tree, tmp_path):
    items = plan.plan_items(tree, tmp_path / "out", frozenset({".png"}), ".dcz")
    assert [i.name for i in items] == sorted(inputs(tree))
    assert {Path(i.target).relative_to(tmp_path / "out").as_posix() for i in items} == \
        {n.replace(".png", ".dcz") for n in inputs(tree)}
    shutil.copy(FIXTURES / FIXTURE_NAMES[0], tree / Path(FIXTURE_NAMES[0]).with_suffix(".bmp"))
    with pytest.raises(PlanError, match="both be written"):
        plan.plan_items(tree, tmp_path / "out", frozenset({".png", ".bmp"}), ".dcz")


def test_manifest_paths_are_relative_to_it(tree, tmp_path):
    manifest = tree / "list.txt"
    manifest.write_text(f"# two of them\n{FIXTURE_NAMES[0]}\n\n{tree / 'a' / 'b' / FIXTURE_NAMES[1]}\n")
    items = plan.plan_items(manifest, tmp_path / "out", frozenset({".png"}), ".dcz")
    assert [i.name for i in items] == [FIXTURE_NAMES[0], f"a/b/{FIXTURE_NAMES[1]}"]
    manifest.write_text("../elsewhere.png\n")
    with pytest.raises(PlanError, match="outside"):
        plan.plan_items(manifest, tmp_path / "out", frozenset({".png"}), ".dcz")


def test_tasks_are_balanced_over_the_workers():
    items = [Item(str(i), str(i), str(i)) for i in range(200)]
    tasks = plan.cut(items, 16, 2)
    assert sum(tasks, []) == items and len(tasks) % 2 == 0
    assert {len(t) for t in tasks} <= {14, 15}
    assert [len(t) for t in plan.cut(items[:24], 16, 2)] == [3] * 8  # 24 Kodak images: 4 tasks each
    assert [len(t) for t in plan.cut(items[:3], 16, 2)] == [1, 1, 1]


# ---------------------------------------------------------------- on the cluster

def test_round_trip_gives_the_serial_paths_bytes(client, tree, tmp_path):
    out, restored = tmp_path / "dcz", tmp_path / "png"
    summary = run_job(client, "compress", tree, out)
    assert (summary.written, summary.skipped, summary.failed) == (6, 0, 0)
    records = {r["input"]: r for r in log_records(summary.log)}
    assert sorted(records) == sorted(inputs(tree))
    for name, path in outputs(out, ".dcz").items():
        data = path.read_bytes()
        assert data == dcomp.compress(load_fixture(Path(name).name)), name  # as dcomp.api writes it
        assert (records[name]["bytes_out"], records[name]["crc32"]) == (len(data), zlib.crc32(data))
    assert summary.bytes_out == sum(p.stat().st_size for p in outputs(out, ".dcz").values())
    assert_complete(tree, out)

    summary = run_job(client, "decompress", out, restored)
    assert (summary.written, summary.failed) == (6, 0)
    decoded = outputs(restored, ".png")
    assert sorted(decoded) == sorted(inputs(tree))
    for name, path in decoded.items():
        assert np.array_equal(pixels(path), pixels(tree / name))
    again = run_job(client, "decompress", out, restored)  # complete PNGs are verified and skipped
    assert (again.written, again.skipped) == (0, 6)


def test_lossy_batch_gives_the_serial_paths_bytes(client, tree, tmp_path):
    summary = run_job(client, "compress", tree, tmp_path / "dcz", method="cnn-ae", quality=2)
    assert (summary.written, summary.failed) == (6, 0)
    for name, path in outputs(tmp_path / "dcz", ".dcz").items():
        assert path.read_bytes() == dcomp.compress(load_fixture(Path(name).name), "cnn-ae", 2), name


def test_resume_after_an_interrupted_run(client, tree, tmp_path):
    from dcomp.batch import run

    out = tmp_path / "dcz"

    def interrupt(summary):
        raise KeyboardInterrupt

    with pytest.raises(run.Interrupted) as stop:
        run_job(client, "compress", tree, out, on_task_done=interrupt)
    assert stop.value.summary.interrupted and 0 < stop.value.summary.done < 6
    assert log_records(stop.value.summary.log, "summary")[0]["interrupted"]
    # What a writer killed half-way leaves: a temporary file beside a missing output.
    missing = sorted(set(inputs(tree)) - set(outputs(out, ".dcz")))[0]
    temp = out / Path(missing).parent / f".{Path(missing).with_suffix('.dcz').name}.99999.tmp"
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(b"half a file")
    done_before = {name: signature(path) for name, path in outputs(out, ".dcz").items()}

    summary = run_job(client, "compress", tree, out)
    assert summary.failed == 0 and summary.written + summary.skipped == 6
    assert summary.skipped >= len(done_before)
    assert not temp.exists() and summary.temporary_files_removed == 1
    assert_complete(tree, out)
    assert {name: signature(outputs(out, ".dcz")[name]) for name in done_before} == done_before  # none rewritten

    nothing = run_job(client, "compress", tree, out)
    assert (nothing.written, nothing.skipped) == (0, 6)

    # An output damaged by someone else is reported, not replaced, unless --force.
    victim = outputs(out, ".dcz")[missing]
    victim.write_bytes(victim.read_bytes()[:-3])
    refused = run_job(client, "compress", tree, out)
    assert (refused.failed, refused.skipped) == (1, 5)
    assert "exists but is not a complete output" in refused.errors[0] and "--force" in refused.errors[0]
    forced = run_job(client, "compress", tree, out, force=True)
    assert (forced.written, forced.failed) == (6, 0)
    assert_complete(tree, out)


def test_a_worker_killed_mid_run_loses_nothing(client, tree, tmp_path):
    for copy in range(3):  # 24 images, one per task: the kill lands while most are still to do
        shutil.copytree(tree / "a", tree / f"copy{copy}")
    shutil.copytree(tree / "a", tree / "a2")
    out = tmp_path / "dcz"
    pids = client.run(os.getpid)
    victim_address, victim_pid = sorted(pids.items())[0]
    from dcomp.batch.cluster import tasks_taken_back

    killed, started = [], time.time()

    def kill_one_worker(summary):
        if not killed:
            os.kill(victim_pid, signal.SIGKILL)
            killed.append(summary.done)

    summary = run_job(client, "compress", tree, out, task_size=1, on_task_done=kill_one_worker)
    assert killed and killed[0] < summary.images
    assert tasks_taken_back(client, started) > 0  # the kill did land on running tasks, and they were redone
    assert summary.failed == 0 and summary.written + summary.skipped == summary.images == len(inputs(tree))
    records = log_records(summary.log)
    assert sorted(r["input"] for r in records) == sorted(inputs(tree))  # each image once: none lost or doubled
    assert_complete(tree, out)
    client.wait_for_workers(WORKERS, timeout=WORKER_RESTART_TIMEOUT_S)  # the nanny restarts it
    assert victim_pid not in client.run(os.getpid).values()


def test_a_bad_image_is_logged_and_the_others_done(client, tree, tmp_path, run_cli):
    good = sorted(inputs(tree))
    (tree / "a" / "truncated.png").write_bytes((FIXTURES / FIXTURE_NAMES[0]).read_bytes()[:300])
    (tree / "not-an-image.png").write_text("hello")
    address = client.scheduler.address
    proc = run_cli("batch", "compress", str(tree), "-o", str(tmp_path / "dcz"), "--cluster", address, "--json")
    text = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("dcomp: error:")]
    assert len(errors) == 2 and any("truncated.png" in e for e in errors) and any("not-an-image" in e for e in errors)
    summary = json.loads(proc.stdout)
    assert (summary["written"], summary["failed"]) == (len(good), 2)
    records = log_records(summary["log"])
    assert sorted(r["input"] for r in records if r["status"] == "ok") == good
    assert {r["input"] for r in records if r["status"] == "failed"} == {"a/truncated.png", "not-an-image.png"}
    assert sorted(outputs(tmp_path / "dcz", ".dcz")) == good


def test_batch_bench_gives_the_local_points_in_the_same_report(client, tmp_path):
    from dcomp.batch import bench
    from dcomp.bench import report, runner

    def config(methods, codecs):
        return runner.BenchConfig(str(FIXTURES), methods, codecs)

    local, merged = tmp_path / "local", tmp_path / "merged"
    expected = runner.run(config(["mlp"], ["png"]), local, log=lambda m: None)
    runner.run(config([], ["png"]), merged, log=lambda m: None)  # a local run to merge into
    points = bench.run(config(["mlp"], ["png"]), merged, client, resume=True, log=lambda m: None)

    def measured(points):  # the timings aside
        kept = [{k: v for k, v in p.items() if k not in ("encode_s", "decode_s", "peak_mb")} for p in points]
        return sorted(kept, key=lambda p: (p["image"], p["codec"], json.dumps(p["setting"])))

    assert measured(points) == measured(expected)
    summary, _ = report.build(points, merged, "merged")
    assert set(summary["lossless"]) == {"mlp", "png"} and summary["lossless"]["mlp"]["exact"]


# ---------------------------------------------------------------- the command line, without a cluster

def test_dask_is_optional_and_its_absence_is_one_line(tree, tmp_path):
    probe = ("import sys; import dcomp.cli; assert 'distributed' not in sys.modules and 'dask' not in sys.modules; "
             "sys.modules['distributed'] = None; sys.argv = ['dcomp', 'batch', 'compress', sys.argv[1], '-o', "
             "sys.argv[2]]; dcomp.cli.main()")
    proc = subprocess.run([sys.executable, "-c", probe, str(tree), str(tmp_path / "out")], capture_output=True,
                          env=cli_env(), timeout=TEST_TIMEOUT_S)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("dcomp: error:") and "pip install 'dcomp[cluster]'" in lines[0]


def test_every_batch_command_shows_examples():
    from typer.testing import CliRunner

    from dcomp.cli import app

    for command in ([], ["compress"], ["decompress"], ["bench"]):
        result = CliRunner().invoke(app, ["batch", *command, "-h"], env={"COLUMNS": "80"})
        assert result.exit_code == 0 and "Example" in result.output, command
        assert "<bool>" not in result.output, command  # flags take no value


def test_usage_errors_come_before_any_cluster(tree, tmp_path, run_cli):
    for args, expect in ((["nowhere", "-o", "out"], "no such folder"),
                         ([str(tree), "-o", "out", "--workers", "2", "--cluster", "tcp://127.0.0.1:1"], "not both"),
                         ([str(tree / FIXTURE_NAMES[0]), "-o", "out"], "single file")):
        proc = run_cli("batch", "compress", *args)
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
