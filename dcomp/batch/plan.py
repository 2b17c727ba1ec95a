"""What a batch run will do, decided before any work: the inputs, their outputs, the tasks.

The inputs are the images under a folder (walked recursively) or the files a manifest lists;
each output goes to the same relative path under the output folder, with the output's suffix,
so the output tree mirrors the input tree. Two inputs that would write one output (a.png and
a.jpg) are refused up front, as `dcomp compress` refuses them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dcomp.errors import DcompError

DEFAULT_TASK_SIZE = 16  # images per task: a task's overhead (~ms on the scheduler) is nothing beside its work
DEFAULT_BENCH_TASK_SIZE = 2  # a bench image runs every codec at every setting: seconds of work already
# Tasks per worker, at least: images differ in cost, and the last tasks of a run leave workers
# idle while others finish, so each worker should have several tasks to share out.
MIN_TASKS_PER_WORKER = 4
MANIFEST_COMMENT = "#"
# cli_outputs.write_output's temporary names beside a target are `.NAME.PID.tmp`.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


class PlanError(DcompError):
    """Inputs or outputs that cannot be used as given (a usage error: exit code 2)."""


@dataclass(frozen=True)
class Item:
    """One image of a run."""
    name: str  # its path relative to the input root (POSIX): what the log and messages call it
    source: str  # the input file
    target: str  # the output file


def _walk(root: Path, suffixes: frozenset[str]) -> list[Path]:
    """The files under `root` with these suffixes, relative to it; dot files and folders (.git,
    temporary files) are not inputs."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(folder, f).relative_to(root) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return sorted(found)


def _read_manifest(manifest: Path) -> list[Path]:
    """The manifest's paths, relative to its folder: one a line, absolute or relative to it;
    blank lines and lines starting with '#' are skipped. A listed file that is missing fails
    on its own in the run; one outside the manifest's folder has no place in the mirror tree."""
    root = Path(os.path.abspath(manifest.parent))
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{manifest}: not a readable manifest ({getattr(exc, 'strerror', None) or exc})") from None
    paths = []
    for number, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith(MANIFEST_COMMENT):
            continue
        resolved = Path(os.path.normpath(root / entry))  # lexically: a symlink may point anywhere
        if not resolved.is_relative_to(root):
            raise PlanError(f"{manifest}:{number}: {entry} is outside the manifest's folder {root}, "
                            "so it has no place in the output tree")
        paths.append(resolved.relative_to(root))
    return paths


def plan_items(source: Path, out_dir: Path, suffixes: frozenset[str], out_suffix: str) -> list[Item]:
    """The items of a run over `source`, a folder or a manifest file, with outputs in `out_dir`.

    suffixes: the input files' suffixes (lower case) taken from a folder; a manifest's entries
    are taken whatever their suffix."""
    if source.is_dir():
        root, relatives = source, _walk(source, suffixes)
    elif source.is_file():
        if source.suffix.lower() in suffixes:
            raise PlanError(f"{source} is a single file: give a folder or a manifest (a text file listing "
                            "paths), or use `dcomp compress` / `dcomp decompress` for single files")
        root, relatives = source.parent, _read_manifest(source)
    else:
        raise PlanError(f"{source}: no such folder or manifest")
    if out_dir.exists() and not out_dir.is_dir():
        raise PlanError(f"-o {out_dir} is a file: the output must be a folder")
    items, seen = [], {}
    for relative in relatives:
        target = out_dir / relative.with_suffix(out_suffix)
        key = os.path.normcase(str(target))
        if key in seen:
            raise PlanError(f"{seen[key]} and {relative.as_posix()} would both be written to {target} "
                            "(rename one)")
        seen[key] = relative.as_posix()
        items.append(Item(relative.as_posix(), str(root / relative), str(target)))
    if not items:
        raise PlanError(f"{source} holds no inputs ({', '.join(sorted(suffixes))})")
    return items


def cut(items: list[Item], task_size: int, workers: int) -> list[list[Item]]:
    """Tasks of at most `task_size` items, at least MIN_TASKS_PER_WORKER per worker, their count a
    multiple of `workers` where there are enough items, and sizes that differ by one at most:
    equal workers given equal tasks finish together, instead of one waiting on the last task."""
    if not items:
        return []
    count = max(math.ceil(len(items) / task_size), MIN_TASKS_PER_WORKER * workers)
    count = min(len(items), math.ceil(count / workers) * workers)
    bounds = [len(items) * i // count for i in range(count + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def make_folders(items: list[Item]) -> None:
    """Create every output folder before the tasks start: workers creating them at once would race."""
    try:
        for folder in sorted({Path(item.target).parent for item in items}):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DcompError(f"cannot create output folder {exc.filename}: {exc.strerror or exc}") from None


def remove_temp_files(items: list[Item]) -> int:
    """Remove the temporary files a killed writer left beside the outputs (never a finished output,
    which only ever appears under its final name); return how many there were. Each output
    folder is listed once, however many outputs it holds."""
    targets: dict[Path, set[str]] = {}
    for item in items:
        target = Path(item.target)
        targets.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, names in targets.items():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and entry.is_file():
                written = name[len(TEMP_PREFIX):-len(TEMP_SUFFIX)].rpartition(".")[0]  # less the writer's pid
                if written in names:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
    return removed
