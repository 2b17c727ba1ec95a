"""`dcomp bench`: every codec and method at every setting on every image, measured.

Each image is one job (loaded once, every codec and setting run on it); jobs run in
worker processes, and each finished point is appended to `points.jsonl` at once, so an
interrupted run keeps what it measured and `--resume` carries on from there.

A results folder that already holds something is used only to resume or, with `force`, to
start over; the folder is created once the data set is found, and removed again if the run
fails before measuring anything.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dcomp import metrics, perceptual
from dcomp.bench import crops, report
from dcomp.bench.folders import make_folder, remove_empty
from dcomp.errors import DcompError

POINTS, SETTINGS = "points.jsonl", "settings.json"


class OutDirError(DcompError):
    """The results folder cannot be used as asked (it holds results, or is not a folder), or the
    crop sheets cannot be written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C once measuring had begun: `points` holds every point saved (earlier ones too)."""

    def __init__(self, points: list[dict]):
        super().__init__()
        self.points = points


@dataclass
class BenchConfig:
    dataset: str
    methods: list[str]
    codecs: list[str]
    qualities: list[int] | None = None
    limit: int | None = None
    device: str = "auto"
    jobs: int = 1
    data_dir: str | None = None
    split: str = "test"
    extra: dict = field(default_factory=dict)


@dataclass
class Entry:
    """One thing to measure: a dcomp method or a classical codec, and its settings."""
    name: str
    kind: str  # "method" or "classical"
    lossless: bool
    settings: list


def plan_entries(config: BenchConfig) -> tuple[list[Entry], list[str]]:
    from dcomp import registry
    from dcomp.classical import available_codecs

    entries, notes = [], []
    for name in config.methods:
        codec = registry.get(name)
        codec.model_id()  # missing weights: fail before the run, not in a worker
        if codec.qualities is None:
            entries.append(Entry(name, "method", True, [None]))
        else:
            qs = [q for q in (config.qualities or list(codec.qualities)) if q in codec.qualities]
            entries.append(Entry(name, "method", False, qs))
    codecs, notes = available_codecs(config.codecs)
    entries += [Entry(c.name, "classical", c.lossless, list(c.settings)) for c in codecs]
    return entries, notes


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(encode, decode) -> tuple[bytes, np.ndarray, float, float, float]:
    """Run encode then decode; wall times and the peak resident memory of the process while
    they ran (the kernel's high-water mark, reset first: no tracing overhead on the timings,
    and the codec libraries' own C allocations count too)."""
    _reset_peak_rss()
    t0 = time.perf_counter()
    data = encode()
    t1 = time.perf_counter()
    back = decode(data)
    t2 = time.perf_counter()
    return data, back, t1 - t0, t2 - t1, _peak_rss_mb()


MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> the mode names classical codecs list


def _flat(image: np.ndarray) -> np.ndarray:
    """What the codecs take: (H, W) for greyscale, (H, W, C) otherwise."""
    return image[:, :, 0] if image.shape[2] == 1 else image


def _codec_calls(entry: Entry, flat: np.ndarray, setting, device: str):
    """(encode, decode) of one entry at one setting on `flat`; None if a classical codec does
    not take the image's mode."""
    import dcomp
    from dcomp.classical import get_codec

    if entry.kind == "method":
        return (lambda: dcomp.compress(flat, entry.name, setting, device)), (lambda d: dcomp.decompress(d, device))
    codec = get_codec(entry.name)
    if MODES[1 if flat.ndim == 2 else flat.shape[2]] not in codec.modes:
        return None
    return (lambda: codec.encode(flat, setting)), (lambda d: codec.decode(d, flat.shape))


def round_trip(entry: Entry, image: np.ndarray, setting, device: str) -> tuple[bytes, np.ndarray]:
    """Encode and decode the (H, W, C) uint8 `image` once, untimed: the file and the decoded
    (H, W, C) image. The entry must take the image's mode (it did when it was measured on it)."""
    encode, decode = _codec_calls(entry, _flat(image), setting, device)
    data = encode()
    return data, decode(data).reshape(image.shape)


def _quality(original: np.ndarray, decoded: np.ndarray) -> dict:
    """The quality metrics of a lossy point (see metrics and perceptual)."""
    ms, scales = metrics.ms_ssim(original, decoded)
    return {"psnr": metrics.psnr(original, decoded), "ssim": metrics.ssim(original, decoded), "ms_ssim": ms,
            "ms_ssim_scales": scales, "haarpsi": perceptual.haarpsi(original, decoded),
            "swd_patches": perceptual.swd_patches(original, decoded)}


def measure_image(name: str, image: np.ndarray, entries: list[Entry], device: str, done: set,
                  on_point=None) -> list[dict]:
    """All points of one image. `image` is (H, W, C) uint8. `on_point` sees each point as
    soon as it is measured (the serial run saves it at once: Ctrl-C loses nothing)."""
    h, w, c = image.shape
    flat = _flat(image)
    points = []
    for entry in entries:
        for setting in entry.settings:
            if (name, entry.name, json.dumps(setting)) in done:
                continue
            calls = _codec_calls(entry, flat, setting, device)
            if calls is None:
                continue
            try:
                data, back, t_enc, t_dec, peak = _measure(*calls)
            except Exception as exc:  # noqa: BLE001 - one codec failing must not stop the run
                points.append({"image": name, "codec": entry.name, "setting": setting, "error": str(exc)})
                if on_point:
                    on_point(points[-1])
                continue
            back = back.reshape(flat.shape)
            point = {"image": name, "codec": entry.name, "kind": entry.kind, "lossless": entry.lossless,
                     "setting": setting, "width": w, "height": h, "channels": c, "bytes": len(data),
                     "bpp": len(data) * 8 / (w * h), "bpsp": len(data) * 8 / (w * h * c),
                     "encode_s": t_enc, "decode_s": t_dec, "peak_mb": peak}
            if entry.lossless:
                point["exact"] = bool(np.array_equal(back, flat))
            else:
                point.update(_quality(flat, back))
            points.append(point)
            if on_point:
                on_point(point)
    return points


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (it terminates the
    # pool), so workers do not die half-way through writing a result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # One image per process already fills the cores: torch's own threads would only contend
    # (measured: 2 workers x 2 torch threads made cnn-ae-ft 2-3x slower on CIFAR images).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _job(args) -> list[dict]:
    image, entries, device, done = args
    return measure_image(image.name, image.load(), entries, device, done)


def check_out_dir(out_dir: Path, resume: bool, force: bool) -> None:
    """Refuse a results folder that holds anything unless resuming it or starting over in it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutDirError(f"{out_dir} is not a folder")
    if resume and force:
        raise OutDirError("--resume continues the results in the folder, --force replaces them: give one")
    if not (resume or force) and out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutDirError(f"{out_dir} already holds results (--resume continues them, --force starts over)")


def _start_over(out_dir: Path) -> None:
    """Remove the results of an earlier run (the files this module and the report write, no others)."""
    for pattern in (POINTS, SETTINGS, *report.OUTPUTS):
        for path in out_dir.glob(pattern):
            path.unlink()


def _earlier_points(out_dir: Path, log) -> list[dict]:
    path = out_dir / POINTS
    if not path.exists():
        return []
    points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    log(f"resuming: {len(points)} points already measured")
    return points


def _write_settings(out_dir: Path, config: BenchConfig, label: str, images: list, entries: list[Entry]) -> None:
    command = " ".join(["dcomp"] + sys.argv[1:]) if Path(sys.argv[0]).name in ("dcomp", "__main__.py") else None
    (out_dir / SETTINGS).write_text(json.dumps(
        {"command": command, "config": asdict(config), "dataset_label": label, "images": len(images),
         "entries": [asdict(e) for e in entries], "versions": versions(), "started": time.strftime("%F %T")},
        indent=1))


def _measure_all(todo: list, entries: list[Entry], config: BenchConfig, done: set, save, progress) -> None:
    if config.jobs <= 1:
        for i, img in enumerate(todo, 1):
            measure_image(img.name, img.load(), entries, config.device, done, on_point=save)
            if progress:
                progress(i, len(todo))
        return
    # Images load in the workers: file-based ones travel as paths, not pixels.
    with multiprocessing.Pool(config.jobs, initializer=_worker_init) as pool:
        jobs = pool.imap_unordered(_job, [(img, entries, config.device, done) for img in todo])
        try:
            for i, new in enumerate(jobs, 1):
                for point in new:
                    save(point)
                if progress:
                    progress(i, len(todo))
        except KeyboardInterrupt:
            pool.terminate()  # images in flight are lost; finished ones are saved
            raise


def _save_crops(request: crops.CropRequest, images: list, points: list[dict], entries: list[Entry], device: str,
                log) -> None:
    try:
        written = crops.write_sheets(images, points, entries,
                                     lambda entry, image, setting: round_trip(entry, image, setting, device), request)
    except OSError as exc:
        raise OutDirError(f"cannot write crop sheets to {request.folder}: {exc.strerror or exc}") from None
    log(f"crop sheets in {request.folder}/ ({', '.join(path.name for path in written)})")


@dataclass
class RunPlan:
    """What a run measures, decided before any measuring: the same for every executor."""
    entries: list[Entry]
    label: str
    images: list
    todo: list  # the images with a point still to measure
    done: set  # (image, codec, setting) of the points already measured
    points: list[dict]  # every point so far (earlier ones too when resuming); record appends
    created: Path | None  # the folder this run made, if any (removed again if nothing lands in it)


def plan_run(config: BenchConfig, out_dir: Path, resume: bool = False, force: bool = False, log=print) -> RunPlan:
    """The results folder checked and readied (OutDirError before any work), the codecs, the
    images and, when resuming, the points already there."""
    from dcomp.datasets import resolve_dataset

    check_out_dir(out_dir, resume, force)
    entries, notes = plan_entries(config)
    for note in notes:
        log(f"skipped {note}")
    label, images = resolve_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None,
                                    config.split, config.limit, on_note=log)
    try:
        created = make_folder(out_dir)
    except OSError as exc:
        raise OutDirError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    if resume:
        points = _earlier_points(out_dir, log)
    else:
        _start_over(out_dir)
        points = []
    done = {point_key(p) for p in points if "error" not in p}
    todo = [img for img in images
            if any((img.name, e.name, json.dumps(s)) not in done for e in entries for s in e.settings)]
    return RunPlan(entries, label, images, todo, done, points, created)


def point_key(point: dict) -> tuple[str, str, str]:
    return point["image"], point["codec"], json.dumps(point["setting"])


def record(plan: RunPlan, config: BenchConfig, out_dir: Path, measure: Callable[[Callable[[dict], None]], None]
           ) -> list[dict]:
    """Run measure(save), which calls save(point) for each point it measures, however it
    measures them: each point is appended to the folder's points as it comes. Returns every
    point; Interrupted on Ctrl-C."""
    try:
        _write_settings(out_dir, config, plan.label, plan.images, plan.entries)
        with (out_dir / POINTS).open("a") as sink:
            def save(point: dict) -> None:
                sink.write(json.dumps(point) + "\n")
                sink.flush()
                plan.points.append(point)

            measure(save)
    except KeyboardInterrupt:
        raise Interrupted(plan.points) from None
    except Exception:
        if plan.created and not plan.points:  # a folder of this run with nothing measured in it: not left behind
            _start_over(out_dir)
            remove_empty(plan.created)
        raise
    return plan.points


def run(config: BenchConfig, out_dir: Path, resume: bool = False, force: bool = False, log=print,
        progress=None, crop_request: crops.CropRequest | None = None) -> list[dict]:
    """Measure everything; return all points (earlier ones too when resuming). With a
    `crop_request`, then write its crop sheets (see crops).

    Raises OutDirError (see check_out_dir) before any work, and Interrupted on Ctrl-C once
    measuring has begun."""
    plan = plan_run(config, out_dir, resume, force, log)
    log(f"{plan.label}: {len(plan.images)} images, {len(plan.todo)} to measure, {len(plan.entries)} codecs/methods")
    points = record(plan, config, out_dir,
                    lambda save: _measure_all(plan.todo, plan.entries, config, plan.done, save, progress))
    if crop_request:
        _save_crops(crop_request, plan.images, points, plan.entries, config.device, log)
    return points


def versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("dcomp", "numpy", "pillow", "imagecodecs", "torch", "zstandard", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import imagecodecs

        out["codec libraries"] = f"{imagecodecs.jpegxl_version()}, {imagecodecs.avif_version()}"
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return out
