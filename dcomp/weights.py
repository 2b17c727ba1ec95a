"""Writing a trained weights file with its SHA-256 and learning curve, each atomically.

The CLI refuses to replace any of the three unless asked (`companions`); training calls
`publish` when it saves, so an interrupted save leaves the previous files whole.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable


def companions(out: Path) -> list[Path]:
    """The weights file and the two files written beside it."""
    return [out, out.with_name(out.name + ".sha256"), out.with_name(out.stem + ".train.json")]


def publish(out: Path, write_weights: Callable[[Path], None], record: dict) -> str:
    """Write the weights (by `write_weights(path)`), then their SHA-256 and `record` with it; return the digest."""
    weights, sha_file, record_file = companions(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")  # np.savez appends .npz to other names
    try:
        write_weights(tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    record["sha256"] = digest
    _write_text(sha_file, f"{digest}  {out.name}\n")
    _write_text(record_file, json.dumps(record, indent=1))
    return digest


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
