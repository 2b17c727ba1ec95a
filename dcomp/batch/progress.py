"""What a batch run tells: a progress line on stderr, a JSON Lines log of every image, a summary.

The log, one per run (by default OUT/dcomp-batch-COMMAND-DATE-TIME-PID.jsonl), holds one JSON
object a line, each written as it happens, so an interrupted run's log is complete up to there:

    {"event": "start", "command", "source", "out", "images", "tasks", "workers", "options",
     "temporary_files_removed", "time"}
    {"event": "image", "input", "output", "status", "bytes_in", "bytes_out", "pixels", "crc32",
     "seconds", "cpu_s", "worker"}              one per image; "error" instead of sizes if failed
    {"event": "summary", ...}                    Summary.to_dict(); "interrupted": true after Ctrl-C

status is "ok" (written by this run), "skipped" (a complete output was already there) or
"failed". A log given with --log that exists is appended to, never replaced.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from dcomp.batch.worker import FAILED, OK, SKIPPED

PROGRESS_EVERY_S = 2.0  # at most one progress line this often: a log file should stay readable
MAX_ERRORS = 20  # error messages kept in the summary (every one is in the log)


@dataclass
class Summary:
    command: str  # compress or decompress
    images: int  # in the plan
    written: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0  # of the images written or skipped
    bytes_out: int = 0
    dcz_bytes: int = 0  # the .dcz side of bytes_in and bytes_out, for bpp
    pixels: int = 0
    seconds: float = 0.0  # from submitting the first task to the last one's end: warm-up excluded
    cpu_s: float = 0.0  # the workers' CPU seconds on the images: under seconds x workers if others shared the cores
    warmup_s: float = 0.0  # setting the workers up: weights loaded, kernels compiled
    workers: int = 0
    tasks: int = 0
    log: str = ""
    temporary_files_removed: int = 0  # left beside the outputs by writers that were killed
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.written + self.skipped + self.failed

    @property
    def bpp(self) -> float | None:
        return self.dcz_bytes * 8 / self.pixels if self.pixels else None

    @property
    def images_per_s(self) -> float | None:
        """Images worked on (written or failed) per second; skipped ones cost next to nothing."""
        return (self.written + self.failed) / self.seconds if self.seconds > 0 else None

    def add(self, record: dict) -> None:
        status = record["status"]
        self.cpu_s += record.get("cpu_s", 0.0)  # none when the whole task failed
        if status == FAILED:
            self.failed += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(record["error"])
            return
        if status == OK:
            self.written += 1
        elif status == SKIPPED:
            self.skipped += 1
        self.bytes_in += record["bytes_in"]
        self.bytes_out += record["bytes_out"]
        self.dcz_bytes += record["bytes_out" if self.command == "compress" else "bytes_in"]
        self.pixels += record["pixels"]

    def to_dict(self) -> dict:
        rounded = {key: round(getattr(self, key), 3) for key in ("seconds", "cpu_s", "warmup_s")}
        return {**asdict(self), **rounded, "bpp": None if self.bpp is None else round(self.bpp, 4),
                "images_per_s": None if self.images_per_s is None else round(self.images_per_s, 3)}

    def lines(self) -> list[str]:
        rate = f"{self.images_per_s:.2f} images/s, " if self.images_per_s else ""
        bpp = f", {self.bpp:.3f} bpp" if self.bpp is not None else ""
        ended = "interrupted after" if self.interrupted else "in"
        return [f"batch {self.command}: {self.done} of {self.images} images: {self.written} written, "
                f"{self.skipped} skipped, {self.failed} failed {ended} {self.seconds:.1f} s ({rate}warm-up "
                f"{self.warmup_s:.1f} s, {_count(self.workers, 'worker')}, {_count(self.tasks, 'task')})",
                f"  {self.bytes_in:,} bytes in, {self.bytes_out:,} bytes out{bpp}; log {self.log}"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class Progress:
    """Images done, images/s and failures on stderr, at most every PROGRESS_EVERY_S; each
    failure as one `dcomp: error:` line when it comes in (even when quiet)."""

    def __init__(self, summary: Summary, quiet: bool = False, stream: TextIO | None = None):
        self.summary, self.quiet = summary, quiet
        self.stream = stream or sys.stderr
        self.last = time.perf_counter()

    def record(self, record: dict) -> None:
        if record["status"] == FAILED:
            self._say(f"dcomp: error: {record['error']}")

    def tick(self) -> None:
        now = time.perf_counter()
        if self.quiet or now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        s = self.summary
        rate = f", {s.images_per_s:.2f} images/s" if s.images_per_s else ""
        self._say(f"batch {s.command}: {s.done}/{s.images} images ({s.skipped} skipped, {s.failed} failed){rate}")

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class RunLog:
    """The run's JSON Lines log, each line flushed as written."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    @staticmethod
    def default_path(out_dir: Path, command: str) -> Path:
        return out_dir / f"dcomp-batch-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"

    def write(self, event: str, **fields) -> None:
        self._file.write(json.dumps({"event": event, **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
