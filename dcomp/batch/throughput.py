"""`make bench-batch`: batch compression on a local cluster of 1 worker against 2, and a worker
killed half-way through a run.

Throughput: for each data set (CIFAR-10 test images written out as PNGs, the 24 Kodak PNGs) and
method, `dcomp batch` runs with 1 local worker and with 2, each worker with one torch thread
and one BLAS thread, into a new output folder each time. images/s is over the run itself: the
cluster's start and the workers' warm-up (weights, mlp's compiled kernels) are reported apart.
Each setting runs `--repeats` times, alternating 1 and 2 workers, and the best rate is kept
(other work on the machine only ever slows a run down). speedup = rate(2) / rate(1);
efficiency = speedup / 2, the target being at least 0.85.

Fault test: the CIFAR images with mlp on 2 workers, one worker process killed (SIGKILL) once
half of the images are done; every output must then decode to its input's pixels, none missing
and nothing else in the tree, every image once in the log; then the same command run again as
a new process (cluster start included) must find nothing to do, in seconds.

    python -m dcomp.batch.throughput --kodak ../shared/data/kodak --cifar ../shared/data/cifar10-subset \\
        --json results/batch-throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dcomp.batch import cluster, run, worker
from dcomp.batch.plan import DEFAULT_TASK_SIZE

WORKER_COUNTS = (1, 2)
METHODS = ("mlp", "cnn-ae")
CIFAR_IMAGES = 200
REPEATS = 2
TARGET_EFFICIENCY = 0.85
RESTART_TIMEOUT_S = 60


def write_cifar_pngs(data_dir: Path, count: int, folder: Path) -> Path:
    """The first `count` CIFAR-10 test images of the archive in `data_dir`, as PNGs in `folder`."""
    from PIL import Image

    from dcomp.datasets import resolve_dataset

    _, images = resolve_dataset("cifar10", data_dir, limit=count, progress=False, on_note=lambda note: None)
    folder.mkdir(parents=True)
    for image in images:
        Image.fromarray(image.load()).save(folder / f"{image.name}.png")
    return folder


def measure(source: Path, method: str, workers: int, scratch: Path) -> dict:
    """One batch compression of `source` into a new folder under `scratch` on a new local cluster."""
    out = Path(tempfile.mkdtemp(prefix=f"{method}-{workers}w-", dir=scratch))
    start = time.perf_counter()
    with cluster.connect(None, workers) as client:
        started = time.perf_counter() - start
        summary = run.run(run.Job("compress", source, out, worker.Options(method)), client, quiet=True)
    if summary.failed or summary.written != summary.images:
        raise RuntimeError(f"{source} with {method}: {summary.errors[:3]}")
    # The share of their cores the workers got: under 1 when other work on the machine took some.
    core_share = summary.cpu_s / (summary.seconds * workers)
    return {"images_per_s": summary.images_per_s, "seconds": summary.seconds, "core_share": core_share,
            "cpu_s_per_image": summary.cpu_s / summary.images, "warmup_s": summary.warmup_s,
            "cluster_start_s": started, "bpp": summary.bpp, "images": summary.images, "tasks": summary.tasks}


def throughput(sets: dict[str, Path], methods: tuple[str, ...], repeats: int, scratch: Path, log) -> list[dict]:
    rows = []
    for label, source in sets.items():
        for method in methods:
            runs: dict[int, list[dict]] = {n: [] for n in WORKER_COUNTS}
            for repeat in range(repeats):
                for n in WORKER_COUNTS:
                    runs[n].append(measure(source, method, n, scratch))
                    log(f"{label} {method} {n} worker(s), run {repeat + 1}: {runs[n][-1]['images_per_s']:.2f} images/s")
            best = {n: max(r, key=lambda m: m["images_per_s"]) for n, r in runs.items()}
            speedup = best[2]["images_per_s"] / best[1]["images_per_s"]
            rows.append({"dataset": label, "method": method, "images": best[1]["images"],
                         "images_per_s": {str(n): round(best[n]["images_per_s"], 3) for n in WORKER_COUNTS},
                         "per_image_s_one_worker": round(1 / best[1]["images_per_s"], 4),
                         "speedup": round(speedup, 3), "efficiency": round(speedup / 2, 3),
                         "core_share": {str(n): round(best[n]["core_share"], 3) for n in WORKER_COUNTS},
                         "cpu_s_per_image": {str(n): round(best[n]["cpu_s_per_image"], 4) for n in WORKER_COUNTS},
                         "warmup_s": {str(n): round(best[n]["warmup_s"], 2) for n in WORKER_COUNTS},
                         "bpp": round(best[1]["bpp"], 4), "runs": runs})
    return rows


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).copy()


def fault_test(source: Path, scratch: Path, log) -> dict:
    """Kill one of 2 workers half-way; check every output; time a rerun with nothing to do."""
    import dcomp

    out = scratch / "fault"
    job = run.Job("compress", source, out, worker.Options("mlp"))
    killed: list[dict] = []
    with cluster.connect(None, 2) as client:
        address, pid = sorted(client.run(os.getpid).items())[0]
        started = time.time()

        def kill_half_way(summary) -> None:
            if not killed and summary.done >= summary.images // 2:
                os.kill(pid, signal.SIGKILL)
                killed.append({"worker": address, "pid": pid, "after_images": summary.done})

        summary = run.run(job, client, quiet=True, on_task_done=kill_half_way)
        taken_back = cluster.tasks_taken_back(client, started)
    names = sorted(p.relative_to(source).with_suffix("").as_posix() for p in source.rglob("*.png"))
    written = sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.dcz"))
    logged = [r["input"] for r in map(json.loads, Path(summary.log).read_text().splitlines())
              if r["event"] == "image"]
    others = [p.name for p in out.rglob("*") if p.is_file() and p.suffix not in (".dcz", ".jsonl")]
    mismatched = [name for name in written if not np.array_equal(
        dcomp.decompress((out / f"{name}.dcz").read_bytes()), _pixels(source / f"{name}.png"))]
    start = time.perf_counter()
    rerun = subprocess.run([sys.executable, "-m", "dcomp", "batch", "compress", str(source), "-o", str(out),
                            "--workers", "2", "--json", "--quiet"], capture_output=True, timeout=RESTART_TIMEOUT_S)
    rerun_s = time.perf_counter() - start
    again = json.loads(rerun.stdout) if rerun.returncode == 0 else {"error": rerun.stderr.decode()[-500:]}
    result = {"images": summary.images, "killed": killed, "tasks_taken_back": taken_back,
              "written": summary.written, "skipped": summary.skipped, "failed": summary.failed,
              "missing": sorted(set(names) - set(written)), "extra_files": others,
              "logged_twice": sorted({n for n in logged if logged.count(n) > 1}),
              "not_decoding_to_input": mismatched, "seconds": round(summary.seconds, 2),
              "rerun": {"seconds_wall": round(rerun_s, 2), "written": again.get("written"),
                        "skipped": again.get("skipped"), "run_s": again.get("seconds"), "error": again.get("error")}}
    result["ok"] = bool(killed and taken_back and not (result["missing"] or others or result["logged_twice"]
                        or mismatched or summary.failed) and again.get("written") == 0
                        and again.get("skipped") == summary.images)
    log(f"fault test: {'ok' if result['ok'] else 'FAILED'}")
    return result


def table(rows: list[dict]) -> str:
    lines = [f"{'data set':<10} {'method':<7} {'images':>6} {'1 worker img/s':>15} {'2 workers img/s':>16} "
             f"{'speedup':>8} {'efficiency':>10} {'core share 1/2':>15}"]
    for r in rows:
        lines.append(f"{r['dataset']:<10} {r['method']:<7} {r['images']:>6} {r['images_per_s']['1']:>15.2f} "
                     f"{r['images_per_s']['2']:>16.2f} {r['speedup']:>8.2f} {r['efficiency']:>10.2f} "
                     f"{r['core_share']['1']:>7.2f}/{r['core_share']['2']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    # Here, not at the top: spawned workers import this module too, and should import dcomp.blas
    # only once they are set up (see cluster.WorkerSetup).
    from dcomp.blas import usable_cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kodak", type=Path, required=True, help="Folder of the 24 Kodak PNGs.")
    parser.add_argument("--cifar", type=Path, required=True, help="Folder holding a CIFAR-10 python archive.")
    parser.add_argument("--cifar-images", type=int, default=CIFAR_IMAGES)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--no-fault-test", action="store_true")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dcomp-bench-batch-") as tmp:
        scratch = Path(tmp)
        cifar = write_cifar_pngs(args.cifar, args.cifar_images, scratch / "cifar10")
        sets = {"cifar10": cifar, "kodak": args.kodak}
        rows = throughput(sets, tuple(args.methods.split(",")), args.repeats, scratch, log)
        fault = None if args.no_fault_test else fault_test(cifar, scratch, log)
    result = {"task_size": DEFAULT_TASK_SIZE, "repeats": args.repeats, "target_efficiency": TARGET_EFFICIENCY,
              "cores": usable_cores(), "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "throughput": rows, "fault_test": fault}
    print(table(rows))
    print(f"load average (1, 5, 15 min) before {result['load_average_before']}, after {result['load_average_after']}")
    if fault is not None:
        print(f"fault test: killed a worker after {fault['killed'][0]['after_images'] if fault['killed'] else '-'} "
              f"of {fault['images']} images, {fault['tasks_taken_back']} running tasks taken back and redone; "
              f"missing {len(fault['missing'])}, extra files {len(fault['extra_files'])}, logged twice "
              f"{len(fault['logged_twice'])}, not decoding to the input {len(fault['not_decoding_to_input'])}; "
              f"rerun: {fault['rerun']['skipped']} skipped, {fault['rerun']['written']} written in "
              f"{fault['rerun']['seconds_wall']} s (cluster start included): {'ok' if fault['ok'] else 'FAILED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
