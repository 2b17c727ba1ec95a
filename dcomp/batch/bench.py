"""`dcomp batch bench`: the points of `dcomp bench`, measured on a Dask cluster.

Each image is measured by dcomp.bench.runner.measure_image, the function the local bench runs,
so the points are the same (timings aside) and land in the same `points.jsonl`; the caller
builds the same report from them (dcomp.bench.report.build). A results folder is used as the
local bench uses it: refused if it holds results, unless resuming them (--resume, which also
merges points measured by a local run into the report) or starting over (--force).

run() takes runner.run's steps, through runner's own helpers, around another executor: runner
builds its process pool inside run(), with no way to hand it a cluster instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from dcomp.batch.plan import DEFAULT_BENCH_TASK_SIZE, cut
from dcomp.bench import runner
from dcomp.bench.folders import make_folder, remove_empty


def _key(point: dict) -> tuple[str, str, str]:
    return point["image"], point["codec"], json.dumps(point["setting"])


def bench_task(task: tuple[list, set], entries: list[runner.Entry], device: str) -> list[dict]:
    """On a worker: every point of the task's images that is not in its set of points done."""
    images, done = task
    return [point for image in images
            for point in runner.measure_image(image.name, image.load(), entries, device, done)]


def _tasks(todo: list, done: set, task_size: int, workers: int) -> list[tuple[list, set]]:
    """The images cut into tasks, each with the keys of its own images' points done (not the whole run's)."""
    tasks = []
    for chunk in cut(todo, task_size, workers):
        names = {img.name for img in chunk}
        tasks.append((chunk, {key for key in done if key[0] in names}))
    return tasks


def run(config: runner.BenchConfig, out_dir: Path, client, resume: bool = False, force: bool = False,
        task_size: int = DEFAULT_BENCH_TASK_SIZE, log: Callable[[str], None] = print,
        progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """As runner.run, on the cluster of `client`: every point (earlier ones too when resuming).

    Raises runner.OutDirError before any work, runner.Interrupted on Ctrl-C."""
    from dcomp.batch import cluster
    from dcomp.datasets import resolve_dataset

    runner.check_out_dir(out_dir, resume, force)
    entries, notes = runner.plan_entries(config)
    for note in notes:
        log(f"skipped {note}")
    label, images = resolve_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None,
                                    config.split, config.limit, on_note=log)
    try:
        created = make_folder(out_dir)
    except OSError as exc:
        raise runner.OutDirError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    if resume:
        points = runner._earlier_points(out_dir, log)
    else:
        runner._start_over(out_dir)
        points = []
    done = {_key(p) for p in points if "error" not in p}
    todo = [img for img in images
            if any((img.name, e.name, json.dumps(s)) not in done for e in entries for s in e.settings)]
    tasks = _tasks(todo, done, task_size, cluster.worker_count(client))
    log(f"{label}: {len(images)} images, {len(todo)} to measure in {len(tasks)} tasks, {len(entries)} codecs/methods")
    cluster.set_up_workers(client, tuple(e.name for e in entries if e.kind == "method"))
    measured = 0
    try:
        runner._write_settings(out_dir, config, label, images, entries)
        with (out_dir / runner.POINTS).open("a") as sink:
            for (chunk, _), result in cluster.run_tasks(client, bench_task, tasks, entries, config.device):
                if isinstance(result, BaseException):
                    log(f"a task of {len(chunk)} images failed ({type(result).__name__}: {result}); "
                        "--resume measures them")
                    result = []
                for point in result:
                    sink.write(json.dumps(point) + "\n")
                    points.append(point)
                sink.flush()
                measured += len(chunk)
                if progress:
                    progress(measured, len(todo))
    except KeyboardInterrupt:
        raise runner.Interrupted(points) from None
    except Exception:
        if created and not points:  # a folder of this run with nothing measured in it: not left behind
            runner._start_over(out_dir)
            remove_empty(created)
        raise
    return points
