"""Driving a batch run: the plan, its tasks on the cluster, every image logged, a summary.

Resume policy (a run can be stopped at any point and run again with the same command):

- an output that is complete is skipped, never written again: a .dcz that parses with every
  CRC right, made by the job's method, quality and weights; a decoded PNG whose checksums hold
  and whose size and mode are those of its .dcz. With --force every output is redone and replaced.
- an output is only ever written whole under its final name (temporary file, then a link that
  fails if the name is taken), so an interrupted run leaves complete outputs and temporary
  files, never a partial output. The temporary files beside the planned outputs (.NAME.PID.tmp)
  are removed when a run starts and when it ends.
- anything else under an output's name (truncated, damaged, another method's) is left alone and
  reported as a failure in the log, unless --force replaces it.

A lost worker's tasks are run again by Dask on another worker; since complete outputs are
skipped and writes are atomic, a task run twice still writes each output once.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from dcomp import api, registry
from dcomp.batch import worker
from dcomp.batch.plan import (DEFAULT_TASK_SIZE, Item, PlanError, cut, make_folders, plan_items,
                              remove_temp_files)
from dcomp.batch.progress import Progress, RunLog, Summary
from dcomp.errors import DcompError
from dcomp.imageio import IMAGE_SUFFIXES

# command -> (input suffixes, output suffix, what a worker does with a task)
COMMANDS: dict[str, tuple[frozenset[str], str, Callable]] = {
    "compress": (frozenset(IMAGE_SUFFIXES), ".dcz", worker.compress_task),
    "decompress": (frozenset({".dcz"}), worker.DECODED_FORMAT, worker.decompress_task),
}


@dataclass(frozen=True)
class Job:
    command: str  # a key of COMMANDS
    source: Path  # a folder (walked recursively) or a manifest
    out_dir: Path
    options: worker.Options = field(default_factory=worker.Options)
    task_size: int = DEFAULT_TASK_SIZE  # at most; see plan.cut
    log: Path | None = None  # default: a new file in out_dir (RunLog.default_path)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: `summary` holds what was done (all of it in the log too)."""

    def __init__(self, summary: Summary):
        super().__init__()
        self.summary = summary


def plan(job: Job) -> list[Item]:
    """The job's items; PlanError (a usage error) before anything is written."""
    if job.command not in COMMANDS:
        raise PlanError(f"unknown batch command {job.command!r} ({', '.join(COMMANDS)})")
    if job.task_size < 1:
        raise PlanError("--task-size must be at least 1")
    suffixes, out_suffix, _ = COMMANDS[job.command]
    return plan_items(job.source, job.out_dir, suffixes, out_suffix)


def _methods_to_warm(job: Job, items: list[Item]) -> tuple[str, ...]:
    """Compress: the job's method. Decompress: the method of the first file (trees are seldom
    mixed; another method loads on first use)."""
    if job.command == "compress":
        return (job.options.method,)
    try:
        return (api.info(Path(items[0].source).read_bytes())["method"],)
    except (DcompError, OSError):
        return ()


def _records(task: list[Item], result) -> list[dict]:
    """A task's records, or one failure per image if the task itself failed (e.g. its workers
    kept dying: Dask gives up after allowed-failures retries)."""
    if not isinstance(result, BaseException):
        return result
    reason = f"task failed ({type(result).__name__}: {result})"
    return [{"input": item.name, "output": item.target, "status": worker.FAILED, "error": f"{item.name}: {reason}"}
            for item in task]


def run(job: Job, client, items: list[Item] | None = None, quiet: bool = False,
        on_task_done: Callable[[Summary], None] | None = None) -> Summary:
    """Run the job on the cluster of `client` (a dask.distributed Client); return its summary.

    on_task_done: called in this process after each task's records are logged (tests use it to
    kill a worker or interrupt the run part-way). Raises Interrupted on Ctrl-C."""
    from dcomp.batch import cluster

    items = plan(job) if items is None else items
    if job.command == "compress":
        registry.get(job.options.method).model_id()  # missing weights: one message, before any work
    make_folders(items)
    stale = remove_temp_files(items)  # left by writers killed in an earlier run
    log_path = job.log or RunLog.default_path(job.out_dir, job.command)
    summary = Summary(job.command, len(items), workers=cluster.worker_count(client), log=str(log_path),
                      temporary_files_removed=stale)
    tasks = cut(items, job.task_size, summary.workers)
    summary.tasks = len(tasks)
    summary.warmup_s = cluster.set_up_workers(client, _methods_to_warm(job, items))
    progress = Progress(summary, quiet)
    with RunLog(log_path) as log:
        log.write("start", command=job.command, source=str(job.source), out=str(job.out_dir), images=len(items),
                  tasks=len(tasks), workers=summary.workers, options=asdict(job.options),
                  temporary_files_removed=stale, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        start = time.perf_counter()
        try:
            for task, result in cluster.run_tasks(client, COMMANDS[job.command][2], tasks, job.options):
                for record in _records(task, result):
                    summary.add(record)
                    log.write("image", **record)
                    progress.record(record)
                summary.seconds = time.perf_counter() - start
                progress.tick()
                if on_task_done is not None:
                    on_task_done(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.seconds = time.perf_counter() - start
            log.write("summary", **summary.to_dict())
            raise Interrupted(summary) from None
        summary.seconds = time.perf_counter() - start
        summary.temporary_files_removed += remove_temp_files(items)  # of workers lost in this run: none is in flight
        log.write("summary", **summary.to_dict())
    return summary
