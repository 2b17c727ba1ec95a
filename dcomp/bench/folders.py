"""Folders a benchmark run creates, and their removal when the run fails before filling them.

A failed run (unknown data set, a download error, an unreadable image) must not leave empty
results or cache folders behind, so whoever creates folders keeps the list and, on failure,
removes those that are still empty.
"""
from __future__ import annotations

from pathlib import Path


def make_folder(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones created, outermost first.

    OSError (permissions, a file in the way) is the caller's to report."""
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(created: list[Path]) -> None:
    """Remove the folders `make_folder` created, innermost first, as long as they are empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (someone else wrote there) or already gone: keep its parents too
            return
