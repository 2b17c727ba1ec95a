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

# The codecs run many small matrix products; BLAS threads spinning against another busy
# process cost far more than they gain, so one thread unless the user says otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from dcomp.errors import DcompError  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="dcomp: image compression with learned codecs and its own .dcz format.")
train_app = typer.Typer(help="Train a method's weights.", no_args_is_help=True)
app.add_typer(train_app, name="train")
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _fail(message: str, code: int) -> None:
    err.print(f"dcomp: error: {message}", markup=False, highlight=False, soft_wrap=True)
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
            except (DcompError, OSError) as exc:
                failed += 1
                message = str(exc) if isinstance(exc, DcompError) else f"{exc.strerror or exc}"
                if not message.startswith(name):
                    message = f"{name}: {message}"
                err.print(f"dcomp: error: {message}", markup=False, highlight=False, soft_wrap=True)
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
        codec.model_id()  # missing weights: one message, before any file is touched
        outputs = _plan_outputs(inputs, output, ".dcz")
    except (UsageError, DcompError) as exc:
        _fail(str(exc), EXIT_USAGE if not isinstance(exc, DcompError) or "unknown method" in str(exc) else EXIT_FAILED)

    def work(data: bytes, name: str, target: str):
        image = read_image(data, name)
        size = image.size
        out = api.compress(image, method, quality, device)
        return out, {"bytes": len(out), "bpp": round(len(out) * 8 / (size[0] * size[1]), 4)}

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
        _fail(f"{file}: {exc}", EXIT_FAILED)
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


def main() -> None:
    try:
        app()
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


def _print_error(message: str) -> None:
    err.print(f"dcomp: error: {message}", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
