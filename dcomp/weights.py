"""Weights files: loading them (every failure a one-line WeightsError), their model id, and
writing them with their SHA-256 and learning curve.

A weights file is an .npz (no pickle): parameters under "param/NAME", any other arrays
(e.g. integer coding tables) under their own names, and "meta", a JSON object that records
the method and the architecture the parameters belong to. Decoding refuses a file made
with other weights by comparing model ids, the first 4 bytes of the file's SHA-256.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dcomp.errors import WeightsError

PARAM = "param/"
MODEL_ID_BYTES = 4


def model_id(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()[:MODEL_ID_BYTES]


@dataclass
class WeightsFile:
    path: Path
    params: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    meta: dict
    model_id: bytes


def load(path: Path) -> WeightsFile:
    """Read a weights file; WeightsError (one line) if it is missing or not one."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
    except FileNotFoundError:
        raise WeightsError(f"weights not found: {path} (train them with `dcomp train`)") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"cannot read weights {path}: no metadata")
    params = {k[len(PARAM):]: arrays.pop(k) for k in list(arrays) if k.startswith(PARAM)}
    return WeightsFile(path, params, arrays, meta, model_id(raw))


def write_npz(path: Path, params: dict[str, np.ndarray], arrays: dict[str, np.ndarray], meta: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{PARAM + k: v for k, v in params.items()}, **arrays,
                        meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8))
    Path(path).write_bytes(buf.getvalue())


def load_state(module, params: dict[str, np.ndarray], source: Path, method: str) -> None:
    """Parameters into a torch module; a file of another architecture is a WeightsError."""
    import torch
    try:
        module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"weights {source} do not fit {method}'s architecture ({first})") from None


# ---------------------------------------------------------------- writing, for training

def companions(out: Path) -> list[Path]:
    """The weights file and the two files written beside it."""
    return [out, out.with_name(out.name + ".sha256"), out.with_name(out.stem + ".train.json")]


def publish(out: Path, write_weights: Callable[[Path], None], record: dict) -> str:
    """Write the weights (by `write_weights(path)`), then their SHA-256 and `record` with it, each
    atomically; return the digest. The CLI refuses to replace any of the three unless asked."""
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
