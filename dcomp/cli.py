"""The `dcomp` command line: compress, decompress, info, methods, train.

Output for pipes goes to stdout only (the .dcz or image bytes, or --json); progress and
messages go to stderr. Exit codes: 0 all ok, 1 some inputs failed, 2 usage error.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dcomp.errors import DcompError, UnknownMethodError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="dcomp: image compression with learned codecs and its own .dcz format.")
train_app = typer.Typer(help="Train a method's weights.", no_args_is_help=True)
app.add_typer(train_app, name="train")
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _print_error(message: str) -> None:
    err.print(f"dcomp: error: {message}", markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise DcompError(f"{source}: no such file")
    return path.read_bytes()


def _write_output(target: str, data: bytes, force: bool) -> None:
    """Write whole or not at all: a temporary file beside the target, then an atomic rename."""
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(target)
    if path.exists() and not force:
        raise DcompError(f"{target} exists (use --force to overwrite)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plan_outputs(inputs: list[str], output: Optional[str], suffix: str) -> list[str]:
    """Where each input goes: beside it with `suffix`, into a folder, to a file, or stdout."""
    if inputs.count("-") > 1:
        raise UsageError("standard input can be read only once")
    if output is not None and Path(output).is_dir():
        return [str(Path(output) / ((Path(i).stem if i != "-" else "stdin") + suffix)) for i in inputs]
    if len(inputs) > 1:
        if output is not None:
            raise UsageError(f"with several inputs, -o must be an existing folder ({output} is not)")
        if "-" in inputs:
            raise UsageError("'-' (standard input) can only be used alone")
        return [str(Path(i).with_suffix(suffix)) for i in inputs]
    if output is not None:
        return [output]
    return ["-" if inputs[0] == "-" else str(Path(inputs[0]).with_suffix(suffix))]


def _run_batch(inputs: list[str], outputs: list[str], work, json_out: bool, force: bool, verb: str) -> None:
    """Run `work(data, name) -> (bytes, record)` on each input; report failures, go on."""
    if json_out and "-" in outputs:
        raise UsageError("--json writes to standard output: give -o when writing there too")
    records, failed = [], 0
    show = len(inputs) > 1
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not show)
    with progress:
        task = progress.add_task(verb, total=len(inputs))
        for source, target in zip(inputs, outputs):
            name = "stdin" if source == "-" else source
            start = time.perf_counter()
            try:
                data = _read_input(source)
                if target != "-" and Path(target).exists() and not force:
                    raise DcompError(f"{target} exists (use --force to overwrite)")
                out, record = work(data, name, target)
                _write_output(target, out, force)
                record.update({"input": name, "output": "stdout" if target == "-" else target,
                               "seconds": round(time.perf_counter() - start, 3), "ok": True})
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                failed += 1
                if isinstance(exc, DcompError):
                    message = str(exc)
                elif isinstance(exc, OSError):
                    message = f"{exc.strerror or exc}"
                else:
                    message = f"internal error: {type(exc).__name__}: {exc}"
                if not message.startswith(name):
                    message = f"{name}: {message}"
                _print_error(message)
                record = {"input": name, "ok": False, "error": message}
            records.append(record)
            progress.advance(task)
    if json_out:
        print(json.dumps(records if len(records) > 1 else records[0], indent=1))
    elif show:
        err.print(f"{verb}: {len(inputs) - failed} ok, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def compress(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Images to compress; '-' reads standard input."),
    method: str = typer.Option(..., "-m", "--method", help="Codec method (see `dcomp methods`)."),
    quality: Optional[int] = typer.Option(None, "-q", "--quality", help="Quality level of a lossy method."),
    bpp: Optional[float] = typer.Option(None, "--bpp", help="Lossy: the highest quality whose file stays within "
                                                           "this many bits per pixel (instead of -q)."),
    psnr: Optional[float] = typer.Option(None, "--psnr", help="Lossy: the lowest quality whose decoded image "
                                                             "reaches this PSNR in dB (instead of -q)."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Output file, folder (several inputs), or '-' for standard output. "
                                              "Default: beside the input as NAME.dcz; standard output for '-'."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (the file is the same whichever)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON record per input on standard output."),
) -> None:
    """Compress images into .dcz files."""
    from dcomp import api, registry
    from dcomp.imageio import read_image

    try:
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"unknown device '{device}' (auto, cpu or cuda)")
        codec = registry.get(method)
        targets = sum(v is not None for v in (quality, bpp, psnr))
        if targets > 1:
            raise UsageError("give one of -q, --bpp and --psnr")
        if codec.qualities is None and targets:
            raise UsageError(f"method {method} is lossless and takes no -q, --bpp or --psnr")
        if codec.qualities is not None and not (bpp is not None or psnr is not None) \
                and (quality is None or quality not in codec.qualities):
            raise UsageError(f"method {method} needs -q in {codec.qualities.start}..{codec.qualities.stop - 1} "
                             "(or --bpp / --psnr)")
        if (bpp is not None and bpp <= 0) or (psnr is not None and psnr <= 0):
            raise UsageError("--bpp and --psnr take a positive number")
        codec.model_id()  # missing weights: one message, before any file is touched
        outputs = _plan_outputs(inputs, output, ".dcz")
    except (UsageError, UnknownMethodError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except DcompError as exc:  # e.g. missing weights
        _fail(str(exc), EXIT_FAILED)

    def work(data: bytes, name: str, target: str):
        image = read_image(data, name)
        size = image.size
        out = api.compress(image, method, quality, device, target_bpp=bpp, target_psnr=psnr)
        record = {"bytes": len(out), "bpp": round(len(out) * 8 / (size[0] * size[1]), 4)}
        if codec.qualities is not None:
            record["quality"] = api.info(out)["quality"]
        return out, record

    try:
        _run_batch(inputs, outputs, work, json_out, force, "compressed")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command()
def decompress(
    inputs: List[str] = typer.Argument(..., metavar="FILE.dcz...", help=".dcz files; '-' reads standard input."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="Output image, folder, or '-'. The format follows the extension "
                                              "(.png default; .bmp .tif .ppm .webp lossless). Default: NAME.png."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON record per input on standard output."),
) -> None:
    """Decompress .dcz files into images."""
    from dcomp import api
    from dcomp.imageio import encode_image, to_array

    try:
        outputs = _plan_outputs(inputs, output, ".png")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)

    def work(data: bytes, name: str, target: str):
        image = api.decompress(data, device)
        arr, _ = to_array(image)
        suffix = Path(target).suffix if target != "-" else ".png"
        return encode_image(arr, suffix), {"width": arr.shape[1], "height": arr.shape[0]}

    try:
        _run_batch(inputs, outputs, work, json_out, force, "decompressed")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command()
def info(
    file: str = typer.Argument(..., metavar="FILE.dcz", help="A .dcz file, or '-' for standard input."),
    json_out: bool = typer.Option(False, "--json", help="Print the fields as JSON."),
) -> None:
    """Show a .dcz file's header, section sizes and bits per pixel."""
    from dcomp import api

    try:
        fields = api.info(_read_input(file))
    except DcompError as exc:
        message = str(exc)
        _fail(message if message.startswith(file) else f"{file}: {message}", EXIT_FAILED)
    if json_out:
        print(json.dumps(fields, indent=1))
        return
    table = Table(show_header=False, box=None)
    for key, value in fields.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def methods(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the methods: lossless or lossy, qualities, weights id."""
    from dcomp import registry

    rows = []
    for name in registry.names():
        codec = registry.get(name)
        try:
            weights = codec.model_id().hex()
        except DcompError:
            weights = "missing"
        q = codec.qualities
        rows.append({"method": name, "id": codec.method_id, "kind": "lossless" if codec.lossless else "lossy",
                     "qualities": f"{q.start}..{q.stop - 1}" if q else "-", "weights": weights})
    if json_out:
        print(json.dumps(rows, indent=1))
        return
    table = Table("method", "id", "kind", "qualities", "weights id")
    for r in rows:
        table.add_row(r["method"], str(r["id"]), r["kind"], r["qualities"], r["weights"])
    Console().print(table)


@app.command()
def bench(
    dataset: str = typer.Option(..., "--dataset", help="cifar10, kodak (downloaded and cached), or a folder of "
                                                       "images / a cifar-10-batches-py folder or archive."),
    methods_: Optional[str] = typer.Option(None, "--methods", help="dcomp methods, comma-separated (default: all)."),
    codecs: Optional[str] = typer.Option(None, "--codecs",
                                         help="Classical codecs: jpeg,jpeg2000,webp,avif,jxl,png,webp-lossless,"
                                              "jpeg2000-lossless,jxl-lossless,jpegls (default: all installed)."),
    qualities: Optional[str] = typer.Option(None, "--qualities", help="Qualities of the lossy dcomp methods, "
                                                                      "e.g. 1,2,4,8 (default: all)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    jobs: int = typer.Option(1, "--jobs", help="Images measured in parallel processes."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: results/bench-DATASET)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Cache for downloaded data sets "
                                                                      "(default $DCOMP_DATA_DIR or ~/.cache/dcomp)."),
    split: str = typer.Option("test", "--split", help="CIFAR-10 split: test or train."),
    resume: bool = typer.Option(False, "--resume", help="Keep the points already in the results folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on standard output."),
) -> None:
    """Rate-distortion benchmark of dcomp's methods against the classical codecs.

    Writes points (JSONL, CSV), a summary (JSON), RD plots (PNG, SVG), a BD-rate table and a
    Markdown report to the results folder; prints the tables. Ctrl-C keeps what was measured;
    --resume continues.
    """
    from dcomp import registry
    from dcomp.bench import report, runner
    from dcomp.classical import CODECS

    try:
        method_list = [m for m in (methods_.split(",") if methods_ else registry.names()) if m]
        for m in method_list:
            registry.get(m)
        codec_list = [c for c in (codecs.split(",") if codecs else list(CODECS)) if c]
        unknown = [c for c in codec_list if c not in CODECS]
        if unknown:
            raise UsageError(f"unknown codec(s) {', '.join(unknown)} (choose from: {', '.join(CODECS)})")
        q_list = [int(q) for q in qualities.split(",")] if qualities else None
        if jobs < 1 or (limit is not None and limit < 1):
            raise UsageError("--jobs and --limit must be positive")
    except (UsageError, ValueError, DcompError) as exc:
        _fail(str(exc), EXIT_USAGE)
    name = Path(dataset).name if dataset not in ("cifar10", "kodak") else dataset
    out_dir = out or Path("results") / f"bench-{name}"
    config = runner.BenchConfig(dataset, method_list, codec_list, q_list, limit, device, jobs,
                                str(data_dir) if data_dir else None, split)
    log = lambda m: err.print(m, highlight=False, markup=False)  # noqa: E731
    interrupted = False
    bar = Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    task = bar.add_task("images", total=None)
    try:
        with bar:
            points = runner.run(config, out_dir, resume=resume, log=log,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    except KeyboardInterrupt:
        interrupted = True
        err.print("interrupted: writing the report from the points measured so far (--resume continues)")
        path = out_dir / "points.jsonl"
        points = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    except DcompError as exc:
        _fail(str(exc), EXIT_FAILED)
    title = f"dcomp bench on {name}"
    summary = report.build(points, out_dir, title)
    if json_out:
        print(json.dumps(summary, indent=1))
    else:
        _print_bench_tables(summary)
    err.print(f"results in {out_dir}/ (report.md, summary.json, points.csv, rd-*.png)", highlight=False)
    if interrupted:
        raise typer.Exit(130)


def _print_bench_tables(summary: dict) -> None:
    console = Console(width=140)
    lossless = summary["lossless"]
    if lossless:
        ref = lossless.get("jxl-lossless", {}).get("bpsp")
        t = Table("codec", "bits/sub-pixel", "vs JPEG XL", "bit-exact", "encode s", "decode s", "peak MB",
                  title=summary["title"] + ": lossless")
        for name, s in sorted(lossless.items(), key=lambda kv: kv[1]["bpsp"]):
            t.add_row(name, f"{s['bpsp']:.3f}", f"{100 * (s['bpsp'] / ref - 1):+.1f}%" if ref else "-",
                      "yes" if s["exact"] else "NO", f"{s['encode_s']:.3f}", f"{s['decode_s']:.3f}",
                      f"{s['peak_mb']:.0f}")
        console.print(t)
    curves = summary["curves"]
    if curves:
        bd = summary["bd_rate_psnr"]
        from dcomp.bench.report import ANCHORS

        anchors = [a for a in ANCHORS if a in curves]
        t = Table("codec", "points", "bpp range", "PSNR range",
                  *[f"BD-rate vs {a.replace(' (published)', '*')}" for a in anchors],
                  title=summary["title"] + ": lossy (BD-rate on PSNR, negative is better)")
        for name, pts in sorted(curves.items()):
            t.add_row(name, str(len(pts)), f"{pts[0]['bpp']:.2f}–{pts[-1]['bpp']:.2f}",
                      f"{pts[0]['psnr']:.1f}–{pts[-1]['psnr']:.1f}",
                      *[f"{bd[name][a]:+.1f}%" if bd[name].get(a) is not None else "-" for a in anchors])
        console.print(t)
        if any(a.endswith("(published)") for a in anchors):
            console.print("* published curve (CompressAI's measurement on Kodak), not measured in this run")


@train_app.command("mlp")
def train_mlp(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    out: Path = typer.Option(Path("weights/mlp.npz"), "--out", help="Weights file to write."),
    steps: int = typer.Option(6000, "--steps", help="Optimizer steps per network."),
    hidden: str = typer.Option("32,32", "--hidden", help="Hidden layer widths."),
    resume: bool = typer.Option(False, "--resume", help="Start from the float weights stored in --out."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the lossless mlp predictor; writes weights, their SHA-256 and the learning curve."""
    from dcomp.train.mlp import train

    if not data.is_dir():
        _fail(f"{data}: no such folder", EXIT_USAGE)
    widths = tuple(int(v) for v in hidden.split(","))
    record = train(data, out, steps=steps, hidden=widths, seed=seed, resume=resume,
                   log=lambda m: err.print(m, highlight=False))
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) in {record['seconds']} s", highlight=False)


def _train_cnn_ae(method: str, data: Path, out: Path, cifar: Optional[Path], init: Optional[Path], steps: int,
                  minutes: float, crop: int, batch: int, lr_scale: float, resume: bool, seed: int) -> None:
    from dcomp.train.cnn_ae import train

    if not data.is_dir():
        _fail(f"{data}: no such folder", EXIT_USAGE)
    if init is not None and not init.is_file():
        _fail(f"{init}: no such weights file", EXIT_USAGE)
    if crop % 8 or crop < 32:
        _fail("--crop must be a multiple of 8, at least 32", EXIT_USAGE)
    try:
        record = train(data, out, cifar_dir=cifar, init=init, steps=steps, minutes=minutes, crop=crop, batch=batch,
                       lr_scale=lr_scale, resume=resume, seed=seed, method=method,
                       log=lambda m: err.print(m, highlight=False))
    except (DcompError, ValueError) as exc:
        _fail(str(exc), EXIT_FAILED)
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) after {record['curve'][-1]['step']} steps, "
              f"{record['seconds_total']} s in all", highlight=False)


@train_app.command("cnn-ae")
def train_cnn_ae(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    cifar: Optional[Path] = typer.Option(None, "--cifar", help="CIFAR-10 archive, or a folder holding it: "
                                                               "every 4th batch is 64 of its training images."),
    out: Path = typer.Option(Path("weights/cnn-ae.npz"), "--out", help="Weights file to write."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights."),
    steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
    minutes: float = typer.Option(60.0, "--minutes", help="...or after this many minutes."),
    crop: int = typer.Option(128, "--crop", help="Side of the random photo crops."),
    batch: int = typer.Option(8, "--batch", help="Photo crops per step."),
    lr_scale: float = typer.Option(1.0, "--lr-scale", help="Multiply every learning rate."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the weights in --out and extend its curve."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the cnn-ae autoencoder (all qualities in one model); writes weights, SHA-256, learning curve."""
    _train_cnn_ae("cnn-ae", data, out, cifar, init, steps, minutes, crop, batch, lr_scale, resume, seed)


@train_app.command("cnn-ae-ft")
def train_cnn_ae_ft(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    init: Optional[Path] = typer.Option(Path("weights/cnn-ae.npz"), "--init",
                                        help="The pre-trained cnn-ae weights to fine-tune."),
    out: Path = typer.Option(Path("weights/cnn-ae-ft.npz"), "--out", help="Weights file to write."),
    steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
    minutes: float = typer.Option(30.0, "--minutes", help="...or after this many minutes."),
    crop: int = typer.Option(256, "--crop", help="Side of the random photo crops (larger than pre-training)."),
    batch: int = typer.Option(4, "--batch", help="Photo crops per step."),
    lr_scale: float = typer.Option(0.5, "--lr-scale", help="Multiply every learning rate."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the weights in --out and extend its curve."),
    seed: int = typer.Option(1, "--seed"),
) -> None:
    """Fine-tune cnn-ae into cnn-ae-ft on larger crops of high-resolution photographs only."""
    _train_cnn_ae("cnn-ae-ft", data, out, None, init, steps, minutes, crop, batch, lr_scale, resume, seed)


def _click_exceptions():
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    click = _click_exceptions()
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except click.NoArgsIsHelpError as exc:
        err.print(exc.ctx.get_help() if exc.ctx else "", markup=False, highlight=False)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        # Click's own report is a boxed, multi-line usage screen; scripts want one line.
        command = f" {exc.ctx.info_name}" if exc.ctx and exc.ctx.parent else ""
        _print_error(f"{exc.format_message()} (see dcomp{command} --help)")
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        err.print("dcomp: interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        err.print("dcomp: interrupted")
        sys.exit(130)
    except DcompError as exc:
        _print_error(str(exc))
        sys.exit(EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("DCOMP_DEBUG"):
            raise
        _print_error(f"internal error: {type(exc).__name__}: {exc} (set DCOMP_DEBUG=1 for details)")
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
