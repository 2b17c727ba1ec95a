"""`dcomp batch bench`: the points of `dcomp bench`, measured on a Dask cluster.

Each image is measured by dcomp.bench.runner.measure_image, the function the local bench runs,
so the points are the same (timings aside) and land in the same `points.jsonl`; the caller
builds the same report from them (dcomp.bench.report.build). A results folder is used as the
local bench uses it: refused if it holds results, unless resuming them (--resume, which also
merges points measured by a local run into the report) or starting over (--force).

run() is runner.run with another executor: runner.plan_run decides what to measure and
runner.record stores the points as they come, whoever measures them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from dcomp.batch.plan import DEFAULT_BENCH_TASK_SIZE, cut
from dcomp.bench import runner


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

    plan = runner.plan_run(config, out_dir, resume, force, log)
    tasks = _tasks(plan.todo, plan.done, task_size, cluster.worker_count(client))
    log(f"{plan.label}: {len(plan.images)} images, {len(plan.todo)} to measure in {len(tasks)} tasks, "
        f"{len(plan.entries)} codecs/methods")
    cluster.set_up_workers(client, tuple(e.name for e in plan.entries if e.kind == "method"))

    def measure(save: Callable[[dict], None]) -> None:
        measured = 0
        for (chunk, _), result in cluster.run_tasks(client, bench_task, tasks, plan.entries, config.device):
            if isinstance(result, BaseException):
                log(f"a task of {len(chunk)} images failed ({type(result).__name__}: {result}); --resume measures them")
                result = []
            for point in result:
                save(point)
            measured += len(chunk)
            if progress:
                progress(measured, len(plan.todo))

    return runner.record(plan, config, out_dir, measure)
