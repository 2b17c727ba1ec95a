"""One task on a worker: each of its images compressed or decoded and written, or skipped.

A worker process loads each method's weights once: the registry keeps its codecs for the life
of the process, and the cluster's worker setup (cluster.WorkerSetup) loads them, and compiles
mlp's kernels, before the first task. Every output is written whole under its final name or
not at all (cli_outputs.write_output), and an output that is already complete is skipped, so a
task run again (the scheduler retries the tasks of a lost worker) redoes only what is missing.

Nothing here imports Dask: these are plain functions of plain data.
"""
from __future__ import annotations

import io
import os
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dcomp import api, registry
from dcomp.batch.plan import Item
from dcomp.cli_outputs import read_input, write_output
from dcomp.errors import DcompError
from dcomp.imageio import encode_image, read_image, to_array
from dcomp.limits import DEFAULT_MAX_PIXELS

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
WARM_UP_SIDE = 32  # a synthetic image this size runs every kernel of every method once
DECODED_FORMAT = ".png"


class InvalidOutput(DcompError):
    """An existing output that is not a complete output of this job."""


@dataclass(frozen=True)
class Options:
    """What to do with each image (the same for every task of a run)."""
    method: str = "mlp"  # compress: the method; decompress reads it from each file
    quality: int | None = None  # compress: None for the method's default
    device: str = "auto"
    force: bool = False  # replace existing outputs instead of skipping (or refusing) them
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def expected_quality(self) -> int | None:
        return self.quality if self.quality is not None else api.default_quality(self.method)


def warm_up(method: str) -> None:
    """Load the method's weights and run it once on a small synthetic image, so the first real
    image pays no loading or compiling (mlp's numba kernels load from their disk cache)."""
    y, x = np.mgrid[0:WARM_UP_SIDE, 0:WARM_UP_SIDE]
    noise = np.random.default_rng(0).integers(0, 8, (WARM_UP_SIDE, WARM_UP_SIDE, 3))
    image = ((x * 4 + y * 3)[:, :, None] + noise).clip(0, 255).astype(np.uint8)
    api.decompress(api.compress(image, method))


def compress_task(items: list[Item], options: Options) -> list[dict]:
    """One record per item (see progress.RunLog for the fields)."""
    return [_record(_compress_one, item, options) for item in items]


def decompress_task(items: list[Item], options: Options) -> list[dict]:
    return [_record(_decompress_one, item, options) for item in items]


def _record(work: Callable[[Item, Options], dict], item: Item, options: Options) -> dict:
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        outcome = work(item, options)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop its task
        outcome = {"status": FAILED, "error": describe(exc, item.name)}
    # CPU seconds beside wall seconds: a worker that got less than its core (other work on the
    # machine) shows it. The thread's own: torch and BLAS run on it, with one thread each.
    return {"input": item.name, "output": item.target, **outcome, "seconds": round(time.perf_counter() - start, 4),
            "cpu_s": round(time.thread_time() - cpu, 4), "worker": f"{socket.gethostname()}:{os.getpid()}"}


def describe(exc: BaseException, name: str) -> str:
    """One line naming the image, as the CLI prints errors."""
    if isinstance(exc, DcompError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    return message if message.startswith(name) else f"{name}: {message}"


def _compress_one(item: Item, options: Options) -> dict:
    target = Path(item.target)
    if target.exists() and not options.force:
        return _existing(target, lambda: check_dcz(target, Path(item.source), options))
    data = read_input(item.source)
    loaded = read_image(data, item.name, options.max_pixels)
    result = api.compress_report(loaded.image, options.method, options.quality, options.device,
                                 max_pixels=options.max_pixels)
    width, height = loaded.image.size
    outcome = _write(target, result.data, options, lambda: check_dcz(target, Path(item.source), options))
    return {**outcome, "bytes_in": len(data), "pixels": width * height,
            **({"notes": loaded.notes} if loaded.notes else {})}


def _decompress_one(item: Item, options: Options) -> dict:
    target = Path(item.target)
    data = read_input(item.source)
    if target.exists() and not options.force:
        return _existing(target, lambda: check_decoded(target, data))
    result = api.decompress_report(data, options.device, max_pixels=options.max_pixels)
    arr, _ = to_array(result.image)
    outcome = _write(target, encode_image(arr, DECODED_FORMAT), options, lambda: check_decoded(target, data))
    return {**outcome, "bytes_in": len(data), "pixels": arr.shape[0] * arr.shape[1], "method": result.method}


def _existing(target: Path, check: Callable[[], dict]) -> dict:
    """A complete output is skipped; anything else under its name is left alone and reported."""
    try:
        return {"status": SKIPPED, **check()}
    except InvalidOutput as exc:
        raise InvalidOutput(f"{target} exists but is not a complete output of this job ({exc}); "
                            "--force replaces it") from None


def _write(target: Path, data: bytes, options: Options, check: Callable[[], dict]) -> dict:
    try:
        write_output(str(target), data, options.force, create_folder=False)
    except DcompError:
        # Linked first by another attempt at this task (one the scheduler believed lost, still
        # running): its output stands if it is complete.
        if not target.exists():
            raise
        return _existing(target, check)
    return {"status": OK, "bytes_out": len(data), "crc32": zlib.crc32(data)}


def check_dcz(target: Path, source: Path, options: Options) -> dict:
    """The facts of a complete .dcz output of this job: it parses with every CRC right (the
    container checks them; nothing is decoded) and was made by the same method, quality and
    weights. InvalidOutput otherwise."""
    data = target.read_bytes()
    try:
        fields = api.info(data)
    except DcompError as exc:
        raise InvalidOutput(str(exc)) from None
    made = (fields["method"], fields["quality"], fields["model_id"])
    wanted = (options.method, options.expected_quality, registry.get(options.method).model_id().hex())
    if made != wanted:
        raise InvalidOutput(f"made by {made[0]}, quality {made[1]}, model {made[2]}; this job is {wanted[0]}, "
                            f"quality {wanted[1]}, model {wanted[2]}")
    return {"bytes_in": source.stat().st_size, "bytes_out": len(data), "crc32": zlib.crc32(data),
            "pixels": fields["width"] * fields["height"]}


def check_decoded(target: Path, dcz: bytes) -> dict:
    """The facts of a complete decoded output of the .dcz bytes `dcz`: a PNG whose chunk CRCs
    and zlib checksum hold (verified, then fully decoded) with the size and mode the file's
    header gives. InvalidOutput otherwise."""
    from PIL import Image

    fields = api.info(dcz)
    data = target.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            found = (image.format, image.size, image.mode)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
        raise InvalidOutput(f"not a readable PNG: {exc}") from None
    wanted = ("PNG", (fields["width"], fields["height"]), fields["mode"])
    if found != wanted:
        raise InvalidOutput(f"a {found[0]} {found[1][0]}x{found[1][1]} {found[2]} image, "
                            f"not {wanted[1][0]}x{wanted[1][1]} {wanted[2]}")
    return {"bytes_in": len(dcz), "bytes_out": len(data), "crc32": zlib.crc32(data),
            "pixels": fields["width"] * fields["height"]}
