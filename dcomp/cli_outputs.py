"""Where the CLI's outputs go, and writing them so that no existing file is ever lost.

Every target is decided before any work is done, so a batch that would write two inputs to one
file, an input over itself, or binary data to a terminal is refused up front. Files are written
to a temporary name and then linked into place, which fails rather than replaces an existing
file unless the user forced it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dcomp.errors import DcompError

STDIO = "-"
STDIN_STEM = "stdin"  # the output name of standard input written into a folder


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit code 2)."""


@dataclass(frozen=True)
class OutputPlan:
    targets: list[str]  # one per input: a path, or STDIO
    folder: Path | None  # the -o folder, created when the first file is written into it


def plan_outputs(inputs: list[str], output: str | None, suffix: str) -> OutputPlan:
    """Map each input to its output: beside it with `suffix`, into a folder, to a file, or stdout.

    `-o` names a folder when it ends with '/', already is one, or several inputs are given."""
    if inputs.count(STDIO) > 1:
        raise UsageError("standard input can be read only once")
    folder = None
    if output not in (None, STDIO) and (output.endswith(("/", os.sep)) or Path(output).is_dir() or len(inputs) > 1):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {output}: with several inputs -o must be a folder, and this is a file")
        targets = [str(folder / ((Path(i).stem if i != STDIO else STDIN_STEM) + suffix)) for i in inputs]
    elif len(inputs) > 1:
        if STDIO in inputs:
            raise UsageError("'-' (standard input) needs -o FILE or -o - when given with other inputs")
        targets = [str(Path(i).with_suffix(suffix)) for i in inputs]
    elif output is not None:
        targets = [output]
    else:
        targets = [STDIO if inputs[0] == STDIO else str(Path(inputs[0]).with_suffix(suffix))]
    _refuse_collisions(inputs, targets)
    return OutputPlan(targets, folder)


def _refuse_collisions(inputs: list[str], targets: list[str]) -> None:
    """Two inputs to one output would silently lose the first; an output over its input, the input."""
    sources = {_key(i): i for i in inputs if i != STDIO}
    seen: dict[str, str] = {}
    for source, target in zip(inputs, targets):
        if target == STDIO:
            continue
        key = _key(target)
        if key in sources:
            raise UsageError(f"{target} is an input: writing {source} there would replace it")
        if key in seen:
            raise UsageError(f"{seen[key]} and {source} would both be written to {target} "
                             "(rename one, or compress them into separate folders)")
        seen[key] = source


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def refuse_terminal(targets: list[str], force: bool) -> None:
    """Binary data on a terminal is garbage on the screen (gzip and zstd refuse it too)."""
    if STDIO in targets and not force and sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal: redirect standard output "
                         "(> file or | program), or add --force")


def read_input(source: str) -> bytes:
    if source == STDIO:
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise DcompError(f"{source}: no such file")
    return path.read_bytes()


def check_writable(target: str, force: bool, create_folder: bool) -> None:
    """Fail before the work, not after it, when the output exists or has nowhere to go."""
    if target == STDIO:
        return
    path = Path(target)
    if path.exists() and not force:
        raise DcompError(f"{target} exists (use -o to choose another name, or --force to overwrite)")
    if not create_folder and not path.parent.is_dir():
        raise DcompError(f"{target}: folder {path.parent} does not exist (end -o with '/' to create a folder)")


def write_output(target: str, data: bytes, force: bool, create_folder: bool) -> None:
    """Write whole or not at all; never replace an existing file unless `force`.

    `create_folder`: the target's folder is made if missing (and removed again if the write
    fails and leaves it empty)."""
    if target == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(target)
    created = _make_parent(path.parent) if create_folder else None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, target)
    except BaseException:
        if created is not None and not any(created.iterdir()):
            created.rmdir()  # a folder made only for this file
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _make_parent(folder: Path) -> Path | None:
    """Create the output folder if needed; return it if this call created it."""
    if folder.is_dir():
        return None
    if folder.exists():
        raise DcompError(f"{folder} is not a folder")
    top = folder
    while not top.parent.exists():
        top = top.parent
    folder.mkdir(parents=True)
    return top


def _link_new(tmp: Path, path: Path, target: str) -> None:
    """Give the finished file its name only if the name is free, atomically (no check-then-write race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DcompError(f"{target} exists (use --force to overwrite)") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise DcompError(f"{target} exists (use --force to overwrite)") from None
        os.replace(tmp, path)
