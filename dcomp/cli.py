"""The `dcomp` command line: compress, decompress, info, methods, bench, train.

Output for pipes goes to stdout only (the .dcz or image bytes, or --json records); progress,
one summary line per file and warnings go to stderr. Exit codes: 0 all ok, 1 some inputs
failed, 2 usage error.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dcomp.batch.plan import DEFAULT_BENCH_TASK_SIZE, DEFAULT_TASK_SIZE
from dcomp.cli_outputs import STDIO, UsageError, check_writable, plan_outputs, read_input, refuse_terminal, \
    write_output
from dcomp.errors import DcompError, UnknownMethodError
from dcomp.limits import DEFAULT_MAX_PIXELS

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, context_settings=CONTEXT, rich_markup_mode=None,
                  help="dcomp: image compression with learned codecs and its own .dcz format.\n\n"
                       "\b\nExamples:\n"
                       "  dcomp compress photo.png                  # lossless (mlp) -> photo.dcz\n"
                       "  dcomp compress photo.png -m cnn-ae-ft -q 4 -o small.dcz   # lossy\n"
                       "  dcomp decompress photo.dcz -o restored.png\n"
                       "  dcomp info photo.dcz")
train_app = typer.Typer(rich_markup_mode=None, help="Train a method's weights.\n\nWritten to trained/ unless --out says "
                                                    "otherwise; an existing file is replaced only with --force.\n\n"
                                                    "\b\nExamples:\n"
                                                    "  dcomp train mlp --data ../shared/data/photos-train\n"
                                                    "  dcomp train gan-ae --data ../shared/data/photos-train "
                                                    "--minutes 30\n"
                                                    "  DCOMP_WEIGHTS_DIR=trained dcomp methods   # use them",
                        no_args_is_help=True, context_settings=CONTEXT)
app.add_typer(train_app, name="train")
batch_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True, context_settings=CONTEXT,
                        help="Compress, decompress or benchmark whole folder trees on a Dask cluster.\n\n"
                             "Outputs mirror the input tree; a rerun skips every complete output, so an "
                             "interrupted run continues where it stopped. Needs pip install 'dcomp[cluster]'.\n\n"
                             "\b\nExamples:\n"
                             "  dcomp batch compress photos/ -o archive/ --workers 2\n"
                             "  dcomp batch decompress archive/ -o restored/ --cluster tcp://HOST:8786\n"
                             "  dcomp batch bench --dataset kodak --methods mlp --codecs png")
app.add_typer(batch_app, name="batch")
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEVICES = ("auto", "cpu", "cuda")


def _flag(*names: str, help: str) -> bool:
    """A boolean switch, shown in --help without a type (it takes no value)."""
    return typer.Option(False, *names, help=help, metavar="", show_default=False)


def _print_error(message: str) -> None:
    err.print(f"dcomp: error: {message}", markup=False, highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    err.print(message, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from dcomp import __version__
        from dcomp.container import VERSION

        print(f"dcomp {__version__} (.dcz format version {VERSION})")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, metavar="",
                                       help="Print the version and exit.")) -> None:
    pass


def _error_message(exc: Exception, name: str) -> str:
    if isinstance(exc, DcompError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = f"{exc.strerror or exc}"
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    return message if message.startswith(name) else f"{name}: {message}"


def _run_batch(inputs: list[str], output: Optional[str], suffix: str, work: Callable, *, json_out: bool,
               force: bool, quiet: bool, verb: str) -> None:
    """Run `work(data, name) -> (bytes, record, summary line)` on each input; report failures, go on."""
    plan = plan_outputs(inputs, output, suffix)
    if json_out and STDIO in plan.targets:
        raise UsageError("--json writes to standard output: give -o when writing there too")
    refuse_terminal(plan.targets, force)
    failed = 0
    # A bar only on a terminal: in a log or a pipe it would leave blank lines between the messages.
    show_bar = len(inputs) > 1 and not quiet and err.is_terminal
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not show_bar)
    with progress:
        task = progress.add_task(verb, total=len(inputs))
        for source, target in zip(inputs, plan.targets):
            name = "stdin" if source == STDIO else source
            start = time.perf_counter()
            try:
                check_writable(target, force, create_folder=plan.folder is not None)
                out, record, line = work(read_input(source), name, target)
                write_output(target, out, force, create_folder=plan.folder is not None)
                record = {"input": name, "output": "stdout" if target == STDIO else target, **record,
                          "seconds": round(time.perf_counter() - start, 3), "ok": True}
                if not (quiet or json_out or target == STDIO):  # as zstd: no chatter around a pipe
                    _say(line)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                failed += 1
                message = _error_message(exc, name)
                _print_error(message)
                record = {"input": name, "ok": False, "error": message}
            if json_out:
                print(json.dumps(record), flush=True)  # JSON Lines: one record per input, as it ends
            progress.advance(task)
    if len(inputs) > 1 and not quiet:
        _say(f"{verb}: {len(inputs) - failed} ok, {failed} failed")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise UsageError(f"unknown device '{device}' ({', '.join(DEVICES)})")


def _check_max_pixels(max_pixels: int) -> None:
    if max_pixels < 1:
        raise UsageError("--max-pixels must be positive")


def _quality_text(quality: int | None, psnr: float | None) -> str:
    return (f", quality {quality}" if quality else "") + (f", {psnr:.2f} dB" if psnr is not None else "")


DEVICE_HELP = "auto (CUDA when present), cpu or cuda; the file is the same whichever."
MAX_PIXELS_HELP = "Refuse images over this many pixels (guards against decompression bombs)."
QUIET_HELP = "No summary line, warnings or progress bar on standard error (errors are still printed)."
# Options compress and decompress share.
FORCE_OPTION = _flag("--force", help="Overwrite existing output files; allow binary output to a terminal.")
DEVICE_OPTION = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP)
JSON_LINES_OPTION = _flag("--json", help="Print one JSON record per input (JSON Lines) on standard output.")
QUIET_OPTION = _flag("--quiet", "-s", help=QUIET_HELP)
MAX_PIXELS_OPTION = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", metavar="N", help=MAX_PIXELS_HELP)


@app.command(epilog="\b\nExamples:\n"
                    "  dcomp compress photo.png                     # lossless mlp -> photo.dcz\n"
                    "  dcomp compress photo.png -m cnn-ae-ft -q 6 -o photo-q6.dcz\n"
                    "  dcomp compress photo.png -m cnn-ae --bpp 0.5 -o photo-small.dcz\n"
                    "  dcomp compress *.png -o out/                 # batch into a new folder\n"
                    "  cat a.png | dcomp compress - > a.dcz         # pipe")
def compress(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", show_default=False,
                                       help="Images to compress (PNG, JPEG, WebP, AVIF, TIFF, BMP, GIF, PPM); "
                                            "'-' reads standard input."),
    method: str = typer.Option("mlp", "-m", "--method", metavar="METHOD",
                               help="mlp (lossless); cnn-ae, cnn-ae-ft, gan-ae or gan-ae-dc (lossy); cnn-rnn-ae "
                                    "(lossy, progressive); see `dcomp methods`."),
    quality: Optional[int] = typer.Option(None, "-q", "--quality", metavar="1..8", show_default=False,
                                          help="Lossy quality: 1 smallest file (≈0.15 bpp) .. 8 best "
                                               "(≈1.5 bpp); default 4. cnn-rnn-ae: 1..16 iterations, default "
                                               "8. Lossless methods take none."),
    bpp: Optional[float] = typer.Option(None, "--bpp", metavar="BITS", show_default=False,
                                        help="Lossy: the highest quality whose file stays within this many "
                                             "bits per pixel (instead of -q)."),
    psnr: Optional[float] = typer.Option(None, "--psnr", metavar="DB", show_default=False,
                                         help="Lossy: the lowest quality whose decoded image reaches this "
                                              "PSNR in dB (instead of -q)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH", show_default=False,
                                         help="Output file, folder (ends with '/', or several inputs; created "
                                              "if missing), or '-' for standard output. Default: NAME.dcz "
                                              "beside each input; standard output for '-'."),
    force: bool = FORCE_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_LINES_OPTION,
    quiet: bool = QUIET_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
) -> None:
    """Compress images into .dcz files.

    Lossless (mlp) by default; lossy with -m cnn-ae or cnn-ae-ft, at -q 4 unless told otherwise.
    One summary line per file goes to standard error.
    """
    from dcomp import api, registry
    from dcomp.imageio import read_image

    try:
        _check_device(device)
        _check_max_pixels(max_pixels)
        codec = registry.get(method)
        targets = sum(v is not None for v in (quality, bpp, psnr))
        if targets > 1:
            raise UsageError("give one of -q, --bpp and --psnr")
        if codec.qualities is None and targets:
            raise UsageError(f"method {method} is lossless and takes no -q, --bpp or --psnr")
        if quality is not None and quality not in codec.qualities:
            raise UsageError(f"-q {quality}: method {method} takes -q {codec.qualities.start}.."
                             f"{codec.qualities.stop - 1} (higher is better quality and a larger file)")
        if (bpp is not None and bpp <= 0) or (psnr is not None and psnr <= 0):
            raise UsageError("--bpp and --psnr take a positive number")
        codec.model_id()  # missing weights: one message, before any file is touched
    except (UsageError, UnknownMethodError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except DcompError as exc:  # e.g. missing weights
        _fail(str(exc), EXIT_FAILED)

    def work(data: bytes, name: str, target: str):
        loaded = read_image(data, name, max_pixels)
        if not quiet:
            for note in loaded.notes:
                _say(note)
        result = api.compress_report(loaded.image, method, quality, device, target_bpp=bpp, target_psnr=psnr,
                                     max_pixels=max_pixels)
        width, height = loaded.image.size
        samples = width * height * len(loaded.image.getbands())
        bits = len(result.data) * 8 / (width * height)
        record = {"method": method, "quality": result.quality, "width": width, "height": height,
                  "bytes": len(result.data), "bpp": round(bits, 4)}
        if result.psnr is not None:
            record["psnr"] = round(result.psnr, 3)
        line = (f"{name} -> {target}: {len(result.data):,} bytes, {bits:.3f} bpp, "
                f"{samples / len(result.data):.1f}:1, {method}{_quality_text(result.quality, result.psnr)}")
        return result.data, record, line

    try:
        _run_batch(inputs, output, ".dcz", work, json_out=json_out, force=force, quiet=quiet, verb="compressed")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command(epilog="\b\nExamples:\n"
                    "  dcomp decompress photo.dcz -o restored.png\n"
                    "  dcomp decompress photo.dcz -o photo.jpg     # to share a lossy result as JPEG\n"
                    "  dcomp decompress out/*.dcz -o decoded/\n"
                    "  dcomp decompress photo.dcz --decoder gan-ae -o sharp.png   # a cnn-ae-ft file, GAN decoder\n"
                    "  dcomp decompress photo-rnn.dcz --iterations 4 -o coarse.png  # a cnn-rnn-ae file's first 4\n"
                    "  dcomp decompress - < a.dcz > a.png")
def decompress(
    inputs: List[str] = typer.Argument(..., metavar="FILE.dcz...", show_default=False,
                                       help=".dcz files; '-' reads standard input."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH", show_default=False,
                                         help="Output image, folder (ends with '/', or several inputs), or '-'. "
                                              "The format follows the extension: .png (default), .tif, .webp, "
                                              ".bmp, .ppm, .pgm and .jxl are exact; .jpg (quality 95) and "
                                              ".avif (quality 90) re-encode. Default: NAME.png beside each file."),
    decoder: Optional[str] = typer.Option(None, "--decoder", metavar="METHOD", show_default=False,
                                          help="Decode with another method that reads the same bits: gan-ae or "
                                               "gan-ae-dc for a cnn-ae-ft file (sharper), and the reverse."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-k", metavar="K", show_default=False,
                                             help="Of a progressive (cnn-rnn-ae) file, decode only the first K "
                                                  "iterations: a coarser image, faster."),
    force: bool = FORCE_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_LINES_OPTION,
    quiet: bool = QUIET_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
) -> None:
    """Decompress .dcz files into images.

    The method and its weights are read from each file.
    """
    from dcomp import api, registry
    from dcomp.imageio import encode_image, to_array

    try:
        _check_device(device)
        _check_max_pixels(max_pixels)
        if decoder is not None:
            registry.get(decoder)
        if iterations is not None and iterations < 1:
            raise UsageError("--iterations must be at least 1")
    except (UsageError, UnknownMethodError) as exc:
        _fail(str(exc), EXIT_USAGE)

    def work(data: bytes, name: str, target: str):
        result = api.decompress_report(data, device, max_pixels=max_pixels, decoder=decoder, iterations=iterations)
        arr, mode = to_array(result.image)
        image = encode_image(arr, Path(target).suffix if target != STDIO else ".png")
        record = {"method": result.method, "decoder": result.decoder, "quality": result.quality,
                  "width": arr.shape[1], "height": arr.shape[0], "mode": mode, "bytes": len(image)}
        line = f"{name} -> {target}: {arr.shape[1]}x{arr.shape[0]} {mode}, {result.method}" \
               + _quality_text(result.quality, None) + (f", decoded by {decoder}" if decoder else "")
        return image, record, line

    try:
        _run_batch(inputs, output, ".png", work, json_out=json_out, force=force, quiet=quiet, verb="decompressed")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command(epilog="\b\nExamples:\n"
                    "  dcomp compress photo.png -m cnn-rnn-ae -q 16 -o photo-rnn.dcz\n"
                    "  dcomp truncate photo-rnn.dcz --iterations 6 -o photo-k6.dcz\n"
                    "  dcomp truncate photo-rnn.dcz --bytes 20000 -o photo-20k.dcz\n"
                    "  dcomp truncate - --bytes 8000 < photo-rnn.dcz > small.dcz")
def truncate(
    file: str = typer.Argument(..., metavar="FILE.dcz", show_default=False,
                               help="A progressive (cnn-rnn-ae) .dcz file, or '-' for standard input."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH", show_default=False,
                                         help="The cut file, or '-' (the default when standard output is a pipe)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", "-k", metavar="K", show_default=False,
                                             help="Keep the first K iterations."),
    max_bytes: Optional[int] = typer.Option(None, "--bytes", metavar="N", show_default=False,
                                            help="Keep as many iterations as fit in N bytes."),
    force: bool = FORCE_OPTION,
    json_out: bool = _flag("--json", help="Print what was kept as one JSON object (needs -o)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Cut a progressive file to fewer iterations, without decoding it.

    The result is the first bytes of the file and a valid file itself: it decodes to exactly
    the image a file compressed at that many iterations gives.
    """
    from dcomp import api

    if (iterations is None) == (max_bytes is None):
        _fail("give one of --iterations K or --bytes N", EXIT_USAGE)
    if (iterations is not None and iterations < 1) or (max_bytes is not None and max_bytes < 1):
        _fail("--iterations and --bytes must be positive", EXIT_USAGE)
    if output is None:
        if sys.stdout.isatty():
            _fail("give -o FILE (or -o - to write the file to standard output)", EXIT_USAGE)
        output = STDIO
    if json_out and output == STDIO:
        _fail("--json writes to standard output: give -o when writing there too", EXIT_USAGE)
    name = "stdin" if file == STDIO else file
    try:
        refuse_terminal([output], force)
        check_writable(output, force, create_folder=False)
        data = read_input(file)
        cut = api.truncate(data, iterations=iterations, max_bytes=max_bytes)
        fields = api.info(cut)
        write_output(output, cut, force, create_folder=False)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        _fail(_error_message(exc, name), EXIT_FAILED)
    record = {"input": name, "output": "stdout" if output == STDIO else output, "iterations": fields["iterations"],
              "bytes": len(cut), "bits_per_pixel": fields["bits_per_pixel"]}
    if json_out:
        print(json.dumps(record))
    elif not quiet and output != STDIO:
        _say(f"{name} -> {output}: {fields['iterations']} iteration(s), {len(cut)} bytes "
             f"({fields['bits_per_pixel']} bpp)")


@app.command(epilog="\b\nExamples:\n  dcomp info photo.dcz\n  dcomp info photo.dcz --json | jq .bits_per_pixel")
def info(
    file: str = typer.Argument(..., metavar="FILE.dcz", show_default=False,
                               help="A .dcz file, or '-' for standard input."),
    json_out: bool = _flag("--json", help="Print the fields as one JSON object."),
) -> None:
    """Show a .dcz file's header and sizes.

    Header fields, section sizes and bits per pixel, without decoding the image.
    """
    from dcomp import api

    try:
        fields = api.info(read_input(file))
    except DcompError as exc:
        _fail(_error_message(exc, file), EXIT_FAILED)
    if json_out:
        print(json.dumps(fields))
        return
    table = Table(show_header=False, box=None)
    for key, value in fields.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command(epilog="\b\nExamples:\n  dcomp methods\n  dcomp methods --json")
def methods(json_out: bool = _flag("--json", help="Print one JSON record per method (JSON Lines).")) -> None:
    """List the methods.

    Lossless or lossy, qualities, default quality and the model id of the installed weights.
    """
    from dcomp import api, registry

    rows = []
    for name in registry.names():
        codec = registry.get(name)
        try:
            model_id = codec.model_id().hex()
        except DcompError:
            model_id = None
        q = codec.qualities
        rows.append({"method": name, "id": codec.method_id, "kind": "lossless" if codec.lossless else "lossy",
                     "qualities": list(q) if q else None, "default_quality": api.default_quality(name),
                     "model_id": model_id})
    if json_out:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table("method", "id", "kind", "qualities", "default -q", "model id")
    for r in rows:
        qualities = f"{r['qualities'][0]}..{r['qualities'][-1]}" if r["qualities"] else "-"
        table.add_row(r["method"], str(r["id"]), r["kind"], qualities, str(r["default_quality"] or "-"),
                      r["model_id"] or "weights missing")
    Console().print(table)


@app.command()
def bench(
    dataset: str = typer.Option(..., "--dataset", help="cifar10, kodak (downloaded and cached), or a folder of "
                                                       "images / a cifar-10-batches-py folder or archive."),
    methods_: Optional[str] = typer.Option(None, "--methods", help="dcomp methods, comma-separated (default: all; "
                                                                   "see `dcomp methods`)."),
    codecs: Optional[str] = typer.Option(None, "--codecs",
                                         help="Classical codecs, comma-separated, from: jpeg, jpeg2000, webp, avif, "
                                              "jxl, png, webp-lossless, jpeg2000-lossless, jxl-lossless, jpegls "
                                              "(default: all installed)."),
    qualities: Optional[str] = typer.Option(None, "--qualities", help="Qualities of the lossy dcomp methods, "
                                                                      "e.g. 1,2,4,8 (default: all)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    jobs: int = typer.Option(1, "--jobs", help="Images measured in parallel processes."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: results/bench-DATASET). One "
                                                           "that holds anything needs --resume or --force."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Cache for downloaded data sets "
                                                                      "(default $DCOMP_DATA_DIR or ~/.cache/dcomp)."),
    split: str = typer.Option("test", "--split", help="CIFAR-10 split: test or train."),
    resume: bool = _flag("--resume", help="Continue the run in the results folder, keeping its points."),
    force: bool = _flag("--force", help="Start over in the results folder, replacing its results."),
    json_out: bool = _flag("--json", help="Print the summary as JSON on standard output."),
    save_crops: Optional[Path] = typer.Option(None, "--save-crops", help="Also write side-by-side crops of the first "
                                                                         "images to this folder: original, each dcomp "
                                                                         "lossy method, JPEG, WebP."),
    crops: int = typer.Option(4, "--crops", help="Images that get a --save-crops sheet."),
    crop_bpp: float = typer.Option(0.25, "--crop-bpp", help="Target of --save-crops: each codec at its setting "
                                                            "whose bpp is nearest."),
) -> None:
    """Rate-distortion benchmark of dcomp's methods against the classical codecs.

    Measures every method and codec on every image; writes the points (JSONL,
    CSV), a summary (JSON), plots (PNG, SVG), BD-rates and a Markdown report
    to the results folder and prints the tables. Ctrl-C keeps what was
    measured; --resume continues.

    \b
    Example:
      dcomp bench --dataset path/to/folder --methods mlp \\
          --codecs png,webp-lossless --jobs 2
    """
    from dcomp.bench import runner
    from dcomp.bench.crops import CropRequest

    if crops < 1 or not crop_bpp > 0:
        _fail("--crops and --crop-bpp must be positive", EXIT_USAGE)
    if save_crops and save_crops.exists() and not save_crops.is_dir():
        _fail(f"--save-crops {save_crops} is not a folder", EXIT_USAGE)
    config, name, out_dir = _bench_setup(dataset, methods_, codecs, qualities, limit, device, jobs, data_dir, split,
                                         out, resume, force)
    request = CropRequest(save_crops, crops, crop_bpp) if save_crops else None
    _bench_measure(lambda progress: runner.run(config, out_dir, resume=resume, force=force, log=_say,
                                               progress=progress, crop_request=request), out_dir, name, json_out)


def _bench_setup(dataset: str, methods_: Optional[str], codecs: Optional[str], qualities: Optional[str],
                 limit: Optional[int], device: str, jobs: int, data_dir: Optional[Path], split: str,
                 out: Optional[Path], resume: bool, force: bool):
    """A bench's configuration, data set name and results folder, checked before any work
    (exit 2 if they cannot be used): `dcomp bench` and `dcomp batch bench` share them."""
    from dcomp import registry
    from dcomp.bench import runner
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
        name = Path(dataset).name if dataset not in ("cifar10", "kodak") else dataset
        out_dir = out or Path("results") / f"bench-{name}"
        runner.check_out_dir(out_dir, resume, force)  # before any work: a rerun must not replace results
    except (UsageError, ValueError, DcompError) as exc:
        _fail(str(exc), EXIT_USAGE)
    config = runner.BenchConfig(dataset, method_list, codec_list, q_list, limit, device, jobs,
                                str(data_dir) if data_dir else None, split)
    return config, name, out_dir


def _bench_measure(measure: Callable, out_dir: Path, name: str, json_out: bool) -> None:
    """Run `measure(progress) -> points` under a progress bar, then write and print the report
    (also after Ctrl-C, from the points measured so far)."""
    from dcomp.bench import report, runner

    interrupted = False
    # A bar only on a terminal: in a log or a pipe it would leave a blank line before the messages.
    bar = Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task("images", total=None)
    try:
        with bar:
            points = measure(lambda done, total: bar.update(task, completed=done, total=total))
    except runner.Interrupted as stop:  # a Ctrl-C before measuring began has nothing to report
        interrupted = True
        _say("interrupted: writing the report from the points measured so far (--resume continues)")
        points = stop.points
    except DcompError as exc:
        _fail(str(exc), EXIT_FAILED)
    summary, written = report.build(points, out_dir, f"dcomp bench on {name}")
    if json_out:
        print(json.dumps(summary, indent=1))
    else:
        _print_bench_tables(summary)
    _say(f"results in {out_dir}/ ({', '.join(path.name for path in written)})")
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
        bd_ms = summary.get("bd_rate_ms_ssim") or {}
        ms_anchors = [a for a in anchors if any(a in row for row in bd_ms.values())]
        if ms_anchors:
            t = Table("codec", *[f"BD-rate vs {a}" for a in ms_anchors],
                      title=summary["title"] + ": lossy (BD-rate on MS-SSIM in dB, negative is better)")
            for name, row in sorted(bd_ms.items()):
                t.add_row(name, *[f"{row[a]:+.1f}%" if row.get(a) is not None else "-" for a in ms_anchors])
            console.print(t)
        if any(a.endswith("(published)") for a in anchors):
            console.print("* published curve (CompressAI's measurement on Kodak), not measured in this run")


@train_app.command("mlp")
def train_mlp(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    out: Path = typer.Option(Path("trained/mlp.npz"), "--out", help="Weights file to write."),
    steps: int = typer.Option(6000, "--steps", help="Optimizer steps per network."),
    hidden: str = typer.Option("32,32", "--hidden", help="Hidden layer widths."),
    resume: bool = _flag("--resume", help="Start from the float weights stored in --out, and replace them."),
    force: bool = _flag("--force", help="Replace an existing --out (and its .sha256 and .train.json)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the lossless mlp predictor; writes weights, their SHA-256 and the learning curve.

    \b
    Example:
      dcomp train mlp --data ../shared/data/photos-train --steps 12000
      DCOMP_WEIGHTS_DIR=trained dcomp compress photo.png   # use the new weights
    """
    from dcomp.train.mlp import train

    if not data.is_dir():
        _fail(f"{data}: no such folder", EXIT_USAGE)
    _refuse_existing_weights(out, resume or force)
    widths = tuple(int(v) for v in hidden.split(","))
    record = train(data, out, steps=steps, hidden=widths, seed=seed, resume=resume,
                   log=lambda m: err.print(m, highlight=False))
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) in {record['seconds']} s", highlight=False)


def _refuse_existing_weights(out: Path, replace: bool) -> None:
    """Weights files are what every existing .dcz decodes with: never replace one by accident."""
    from dcomp.weights import companions

    existing = [p for p in companions(out) if p.exists()]
    if existing and not replace:
        _fail(f"{existing[0]} exists (use --force to replace it, or --resume to continue training it)", EXIT_USAGE)


def _train_cnn_ae(method: str, data: Path, extra: Optional[Path], out: Path, cifar: Optional[Path],
                  init: Optional[Path], steps: int, minutes: float, crop: int, batch: int, lr_scale: float,
                  resume: bool, force: bool, seed: int, threads: int) -> None:
    from dcomp.train.cnn_ae import BLOCK, train

    for folder in (data, extra):
        if folder is not None and not folder.is_dir():
            _fail(f"{folder}: no such folder", EXIT_USAGE)
    if init is not None and not init.is_file():
        _fail(f"{init}: no such weights file", EXIT_USAGE)
    if crop % BLOCK:
        _fail(f"--crop must be a multiple of {BLOCK}", EXIT_USAGE)
    _refuse_existing_weights(out, resume or force)
    try:
        record = train(data, out, extra=extra, cifar_dir=cifar, init=init, steps=steps, minutes=minutes, crop=crop,
                       batch=batch, lr_scale=lr_scale, resume=resume, seed=seed, threads=threads, method=method,
                       log=lambda m: err.print(m, highlight=False))
    except (DcompError, ValueError) as exc:
        _fail(str(exc), EXIT_FAILED)
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) after {record['curve'][-1]['step']} steps, "
              f"{record['seconds_total']} s in all", highlight=False)


@train_app.command("cnn-ae")
def train_cnn_ae(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    extra: Optional[Path] = typer.Option(None, "--extra", help="A second folder of photographs to train on."),
    cifar: Optional[Path] = typer.Option(None, "--cifar", help="CIFAR-10 archive, or a folder holding it: "
                                                               "every 4th batch is 64 of its training images."),
    out: Path = typer.Option(Path("trained/cnn-ae.npz"), "--out", help="Weights file to write."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights."),
    steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
    minutes: float = typer.Option(60.0, "--minutes", help="...or after this many minutes."),
    crop: int = typer.Option(128, "--crop", help="Side of the random photo crops."),
    batch: int = typer.Option(8, "--batch", help="Photo crops per step."),
    lr_scale: float = typer.Option(1.0, "--lr-scale", help="Multiply every learning rate."),
    resume: bool = _flag("--resume", help="Continue from the weights in --out and extend its curve."),
    force: bool = _flag("--force", help="Replace an existing --out (and its .sha256 and .train.json)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch."),
) -> None:
    """Train the cnn-ae autoencoder (all qualities in one model); writes weights, SHA-256, learning curve.

    \b
    Example:
      dcomp train cnn-ae --data ../shared/data/photos-train --extra ../shared/data/photos-train-extra --minutes 30
    """
    _train_cnn_ae("cnn-ae", data, extra, out, cifar, init, steps, minutes, crop, batch, lr_scale, resume, force, seed, threads)


@train_app.command("cnn-ae-ft")
def train_cnn_ae_ft(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    extra: Optional[Path] = typer.Option(None, "--extra", help="A second folder of photographs to train on."),
    init: Optional[Path] = typer.Option(Path("weights/cnn-ae.npz"), "--init",
                                        help="The pre-trained cnn-ae weights to fine-tune."),
    out: Path = typer.Option(Path("trained/cnn-ae-ft.npz"), "--out", help="Weights file to write."),
    steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
    minutes: float = typer.Option(30.0, "--minutes", help="...or after this many minutes."),
    crop: int = typer.Option(256, "--crop", help="Side of the random photo crops (larger than pre-training)."),
    batch: int = typer.Option(4, "--batch", help="Photo crops per step."),
    lr_scale: float = typer.Option(0.5, "--lr-scale", help="Multiply every learning rate."),
    resume: bool = _flag("--resume", help="Continue from the weights in --out and extend its curve."),
    force: bool = _flag("--force", help="Replace an existing --out (and its .sha256 and .train.json)."),
    seed: int = typer.Option(1, "--seed"),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch."),
) -> None:
    """Fine-tune cnn-ae into cnn-ae-ft on larger crops of high-resolution photographs only.

    \b
    Example:
      dcomp train cnn-ae-ft --data ../shared/data/photos-train --init weights/cnn-ae.npz --minutes 30
    """
    _train_cnn_ae("cnn-ae-ft", data, extra, out, None, init, steps, minutes, crop, batch, lr_scale, resume, force, seed, threads)


def _train_gan(method: str, data: Path, init: Path, out: Path, steps: int, minutes: float, crop: int, batch: int,
               max_psnr_drop: float, resume: bool, force: bool, seed: int) -> None:
    from dcomp.train.cnn_ae import BLOCK
    from dcomp.train.gan_ae import train

    if not data.is_dir():
        _fail(f"{data}: no such folder", EXIT_USAGE)
    if not init.is_file():
        _fail(f"{init}: no such weights file", EXIT_USAGE)
    if crop % BLOCK:
        _fail(f"--crop must be a multiple of {BLOCK}", EXIT_USAGE)
    _refuse_existing_weights(out, resume or force)
    try:
        record = train(data, out, method, init, steps=steps, minutes=minutes, crop=crop, batch=batch,
                       max_psnr_drop=max_psnr_drop, resume=resume, seed=seed,
                       log=lambda m: err.print(m, highlight=False))
    except (DcompError, ValueError) as exc:
        _fail(str(exc), EXIT_FAILED)
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) after {record['curve'][-1]['step']} steps, "
              f"{record['seconds_total']} s in all", highlight=False)


def _gan_command(method: str, loss: str):
    def command(
        data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
        init: Path = typer.Option(Path("weights/cnn-ae-ft.npz"), "--init",
                                  help="The cnn-ae-ft weights whose encoder and entropy model are shared."),
        out: Path = typer.Option(Path(f"trained/{method}.npz"), "--out", help="Decoder weights file to write."),
        steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
        minutes: float = typer.Option(60.0, "--minutes", help="...or after this many minutes."),
        crop: int = typer.Option(128, "--crop", help="Side of the random photo crops."),
        batch: int = typer.Option(8, "--batch", help="Photo crops per step."),
        max_psnr_drop: float = typer.Option(0.75, "--max-psnr-drop",
                                            help="PSNR (dB) the decoder may give up against cnn-ae-ft on held-out "
                                                 "photos at each quality; the adversarial weights are steered to "
                                                 "stay within it."),
        resume: bool = _flag("--resume", help="Continue from --out and its critic, extending the curve."),
        force: bool = _flag("--force", help="Replace an existing --out (and its .sha256 and .train.json)."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        _train_gan(method, data, init, out, steps, minutes, crop, batch, max_psnr_drop, resume, force, seed)

    command.__doc__ = (f"Fine-tune a decoder of cnn-ae-ft against a patch critic ({loss}) into {method}.\n\n"
                       f"    \b\n    Example:\n      dcomp train {method} --data ../shared/data/photos-train "
                       f"--minutes 45\n    ")
    return command


train_app.command("gan-ae")(_gan_command("gan-ae", "L2 + Wasserstein with gradient penalty"))
train_app.command("gan-ae-dc")(_gan_command("gan-ae-dc", "L2 + DCGAN non-saturating loss"))


@train_app.command("cnn-rnn-ae")
def train_cnn_rnn_ae(
    data: Path = typer.Option(..., "--data", help="Folder of training photographs (never the evaluation set)."),
    extra: Optional[Path] = typer.Option(None, "--extra", help="A second folder of photographs to train on."),
    init: Path = typer.Option(Path("weights/legacy/cnn-ae-ft.e938af17.npz"), "--init",
                              help="The block-transform cnn-ae-ft weights whose transforms this method starts from."),
    out: Path = typer.Option(Path("trained/cnn-rnn-ae.npz"), "--out", help="Weights file to write."),
    steps: int = typer.Option(100000, "--steps", help="Stop after this many steps..."),
    minutes: float = typer.Option(60.0, "--minutes", help="...or after this many minutes."),
    crop: int = typer.Option(128, "--crop", help="Side of the random photo crops."),
    batch: int = typer.Option(8, "--batch", help="Photo crops per step."),
    hidden: int = typer.Option(32, "--hidden", help="Channels of the recurrent decoder's state."),
    resume: bool = _flag("--resume", help="Continue from the checkpoint beside --out, extending the curve."),
    force: bool = _flag("--force", help="Replace an existing --out (and its .sha256 and .train.json)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train cnn-rnn-ae: schedule and binary priors from cnn-ae-ft, then its recurrent decoder.

    \b
    Example:
      dcomp train cnn-rnn-ae --data ../shared/data/photos-train --minutes 60
    """
    from dcomp.train.cnn_rnn_ae import train

    for folder in (data, extra):
        if folder is not None and not folder.is_dir():
            _fail(f"{folder}: no such folder", EXIT_USAGE)
    if not init.is_file():
        _fail(f"{init}: no such weights file", EXIT_USAGE)
    if crop % 8 or crop < 32:
        _fail("--crop must be a multiple of 8, at least 32", EXIT_USAGE)
    _refuse_existing_weights(out, resume or force)
    try:
        record = train(data, init, out, steps=steps, minutes=minutes, crop=crop, batch=batch, seed=seed, threads=2,
                       resume=resume, recurrent_hidden=hidden, extra=extra,
                       log=lambda m: err.print(m, highlight=False))
    except (DcompError, ValueError) as exc:
        _fail(str(exc), EXIT_FAILED)
    err.print(f"wrote {out} (sha256 {record['sha256'][:16]}…) after {record['steps']} steps, "
              f"{record['seconds_total']} s in all", highlight=False)


# Options the batch commands share.
WORKERS_OPTION = typer.Option(None, "--workers", "-w", metavar="N", show_default=False,
                              help="Start a local cluster of N worker processes (default: one per core).")
CLUSTER_OPTION = typer.Option(None, "--cluster", metavar="ADDRESS", show_default=False,
                              help="Run on the Dask scheduler at ADDRESS (tcp://HOST:8786) instead; inputs and "
                                   "outputs must be on storage its workers see at the same paths.")
THREADS_OPTION = typer.Option(1, "--threads-per-worker", metavar="N",
                              help="Tasks a local worker runs at once (each with one torch thread).")
BATCH_LOG_OPTION = typer.Option(None, "--log", metavar="PATH", show_default=False,
                                help="The run's JSON Lines log, one record per image (default: a new "
                                     "dcomp-batch-*.jsonl in the output folder; appended to if it exists).")
BATCH_JSON_OPTION = _flag("--json", help="Print the summary as one JSON object on standard output.")
BATCH_QUIET_OPTION = _flag("--quiet", "-s", help="No progress or summary on standard error (failures still are).")
BATCH_FORCE_OPTION = _flag("--force", help="Redo every image, replacing existing outputs (by default complete "
                                           "ones are skipped and others reported).")
SOURCE_ARGUMENT = typer.Argument(..., metavar="FOLDER|MANIFEST", show_default=False,
                                 help="A folder (walked recursively; dot files skipped) or a manifest: a text file "
                                      "listing one path a line, relative to its folder.")
BATCH_OUTPUT_OPTION = typer.Option(..., "-o", "--output", metavar="FOLDER", show_default=False,
                                   help="Output folder, mirroring the input tree (created if missing).")


def _task_size_option(default: int, unit: str):
    return typer.Option(default, "--task-size", metavar="N",
                        help=f"{unit} per task, at most (fewer where that gives each worker 4 tasks to share).")


def _check_cluster_options(workers: Optional[int], address: Optional[str], threads: int) -> None:
    if workers is not None and address is not None:
        raise UsageError("give --workers (a local cluster) or --cluster (a running one), not both")
    if (workers is not None and workers < 1) or threads < 1:
        raise UsageError("--workers and --threads-per-worker must be positive")


def _connect(workers: Optional[int], address: Optional[str], threads: int):
    """The cluster to run on (imports Dask: EngineMissing, a DcompError, if it is not installed)."""
    from dcomp.batch import cluster
    from dcomp.blas import usable_cores

    return cluster.connect(address, workers or usable_cores(), threads)


def _batch_job(command: str, source: Path, output: Path, options, workers: Optional[int], address: Optional[str],
               threads: int, task_size: int, log: Optional[Path], json_out: bool, quiet: bool) -> None:
    """Plan (usage errors before a cluster starts), run, report; exit 1 if an image failed."""
    from dcomp.batch import run
    from dcomp.batch.plan import PlanError

    job = run.Job(command, source, output, options, task_size, log)
    try:
        _check_cluster_options(workers, address, threads)
        items = run.plan(job)
    except (UsageError, PlanError) as exc:
        _fail(str(exc), EXIT_USAGE)
    code = EXIT_OK
    try:
        with _connect(workers, address, threads) as client:
            summary = run.run(job, client, items, quiet=quiet)
    except run.Interrupted as stop:
        summary, code = stop.summary, 130
    except DcompError as exc:
        _fail(str(exc), EXIT_FAILED)
    if json_out:
        print(json.dumps(summary.to_dict()))
    elif not quiet:
        for line in summary.lines():
            _say(line)
    if code:
        _say("interrupted: run the same command again to continue (complete outputs are skipped)")
    raise typer.Exit(code or (EXIT_FAILED if summary.failed else EXIT_OK))


@batch_app.command("compress", epilog="\b\nExamples:\n"
                                      "  dcomp batch compress photos/ -o archive/     # mlp, one worker per core\n"
                                      "  dcomp batch compress photos/ -o small/ -m cnn-ae-ft -q 3 --workers 8\n"
                                      "  dcomp batch compress list.txt -o archive/ --cluster tcp://HOST:8786\n"
                                      "  dcomp batch compress photos/ -o archive/ --json | jq .bpp")
def batch_compress(
    source: Path = SOURCE_ARGUMENT,
    output: Path = BATCH_OUTPUT_OPTION,
    method: str = typer.Option("mlp", "-m", "--method", metavar="METHOD", help="As for `dcomp compress`."),
    quality: Optional[int] = typer.Option(None, "-q", "--quality", metavar="Q", show_default=False,
                                          help="Lossy quality, as for `dcomp compress` (default: the method's)."),
    workers: Optional[int] = WORKERS_OPTION,
    address: Optional[str] = CLUSTER_OPTION,
    threads: int = THREADS_OPTION,
    task_size: int = _task_size_option(DEFAULT_TASK_SIZE, "Images"),
    force: bool = BATCH_FORCE_OPTION,
    log: Optional[Path] = BATCH_LOG_OPTION,
    json_out: bool = BATCH_JSON_OPTION,
    quiet: bool = BATCH_QUIET_OPTION,
    device: str = DEVICE_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
) -> None:
    """Compress every image of a folder tree or a manifest into a mirrored tree of .dcz files.

    Rerun to resume: complete outputs are skipped. Progress and a summary go to standard error,
    one record per image to the log.
    """
    from dcomp import registry
    from dcomp.batch.worker import Options

    try:
        _check_device(device)
        _check_max_pixels(max_pixels)
        codec = registry.get(method)
        if quality is not None and (codec.qualities is None or quality not in codec.qualities):
            raise UsageError(f"-q {quality}: method {method} takes " + ("no -q" if codec.qualities is None else
                             f"-q {codec.qualities.start}..{codec.qualities.stop - 1}"))
    except (UsageError, UnknownMethodError) as exc:
        _fail(str(exc), EXIT_USAGE)
    _batch_job("compress", source, output, Options(method, quality, device, force, max_pixels), workers, address,
               threads, task_size, log, json_out, quiet)


@batch_app.command("decompress", epilog="\b\nExamples:\n"
                                        "  dcomp batch decompress archive/ -o restored/ --workers 2\n"
                                        "  dcomp batch decompress archive/ -o restored/ --cluster tcp://HOST:8786")
def batch_decompress(
    source: Path = SOURCE_ARGUMENT,
    output: Path = BATCH_OUTPUT_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    address: Optional[str] = CLUSTER_OPTION,
    threads: int = THREADS_OPTION,
    task_size: int = _task_size_option(DEFAULT_TASK_SIZE, "Files"),
    force: bool = BATCH_FORCE_OPTION,
    log: Optional[Path] = BATCH_LOG_OPTION,
    json_out: bool = BATCH_JSON_OPTION,
    quiet: bool = BATCH_QUIET_OPTION,
    device: str = DEVICE_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
) -> None:
    """Decompress every .dcz file of a folder tree or a manifest into a mirrored tree of PNGs.

    Rerun to resume: complete outputs (their size and mode checked against each .dcz) are skipped.
    """
    from dcomp.batch.worker import Options

    try:
        _check_device(device)
        _check_max_pixels(max_pixels)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    _batch_job("decompress", source, output, Options(device=device, force=force, max_pixels=max_pixels), workers,
               address, threads, task_size, log, json_out, quiet)


@batch_app.command("bench", epilog="\b\nExamples:\n"
                                   "  dcomp batch bench --dataset kodak --methods mlp --codecs png --workers 2\n"
                                   "  dcomp bench --dataset kodak --methods mlp --out results/kodak    # then, into its report:\n"
                                   "  dcomp batch bench --dataset kodak --methods cnn-ae --out results/kodak --resume")
def batch_bench(
    dataset: str = typer.Option(..., "--dataset", help="As for `dcomp bench`: cifar10, kodak, or a folder or archive."),
    methods_: Optional[str] = typer.Option(None, "--methods", help="dcomp methods, comma-separated (default: all)."),
    codecs: Optional[str] = typer.Option(None, "--codecs", help="Classical codecs, comma-separated (default: all "
                                                                "installed; see `dcomp bench --help`)."),
    qualities: Optional[str] = typer.Option(None, "--qualities", help="Qualities of the lossy dcomp methods."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: results/bench-DATASET)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Cache for downloaded data sets."),
    split: str = typer.Option("test", "--split", help="CIFAR-10 split: test or train."),
    resume: bool = _flag("--resume", help="Continue the results in the folder (a local run's too), keeping "
                                          "its points."),
    force: bool = _flag("--force", help="Start over in the results folder, replacing its results."),
    json_out: bool = _flag("--json", help="Print the summary as JSON on standard output."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    workers: Optional[int] = WORKERS_OPTION,
    address: Optional[str] = CLUSTER_OPTION,
    threads: int = THREADS_OPTION,
    task_size: int = _task_size_option(DEFAULT_BENCH_TASK_SIZE, "Images"),
) -> None:
    """`dcomp bench` on a Dask cluster: the same points, in the same results folder and report.
    """
    from dcomp.batch import bench

    try:
        _check_cluster_options(workers, address, threads)
        if task_size < 1:
            raise UsageError("--task-size must be at least 1")
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    config, name, out_dir = _bench_setup(dataset, methods_, codecs, qualities, limit, device, 1, data_dir, split,
                                         out, resume, force)

    def measure(progress: Callable) -> list[dict]:
        with _connect(workers, address, threads) as client:
            return bench.run(config, out_dir, client, resume=resume, force=force, task_size=task_size, log=_say,
                             progress=progress)

    _bench_measure(measure, out_dir, name, json_out)


def _click_exceptions():
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    click = _click_exceptions()
    try:
        code = app(standalone_mode=False, prog_name="dcomp")
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except click.NoArgsIsHelpError as exc:
        err.print(exc.ctx.get_help() if exc.ctx else "", markup=False, highlight=False)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        # Click's own report is a boxed, multi-line usage screen; scripts want one line.
        command = f" {exc.ctx.command_path.removeprefix('dcomp ')}" if exc.ctx and exc.ctx.parent else ""
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
