"""Shared fixtures: the small real crops in tests/fixtures, the weights file, a CLI runner.

Nothing here reads /work/shared: the tests run from a fresh clone.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _one_blas_thread() -> None:
    """The codecs run many small matrix products: with OpenBLAS threads spinning against a busy
    machine they run ~10x slower. The CLI sets OPENBLAS_NUM_THREADS=1 before numpy loads, but
    under pytest a plugin (hypothesis) has imported numpy before this file runs, so the variable
    alone comes too late: also tell the already-loaded OpenBLAS directly (Linux, best effort).
    An OPENBLAS_NUM_THREADS set by the user is respected."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # for subprocesses, and if numpy is not loaded yet
    if "numpy" not in sys.modules:
        return
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(1)
                break


_one_blas_thread()

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Real photograph crops (RGB PNG): kodim03 64x48, kodim08 40x40, kodim23 33x21.
FIXTURE_NAMES = ("kodim03_64x48.png", "kodim08_40x40.png", "kodim23_33x21.png")


def load_fixture(name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(FIXTURES / name) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="session")
def fixture_arrays() -> dict[str, np.ndarray]:
    return {name: load_fixture(name) for name in FIXTURE_NAMES}


@pytest.fixture(scope="session")
def weights_file() -> Path:
    """The installed mlp weights (whatever they are: tests never depend on their values)."""
    from dcomp import registry

    path = registry.weights_dir() / registry.METHODS["mlp"][3]
    if not path.is_file():
        pytest.skip(f"no mlp weights at {path}")
    return path


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty codec cache, so DCOMP_WEIGHTS_DIR set by the test takes effect in-process."""
    from dcomp import registry

    monkeypatch.setattr(registry, "_cache", {})
    return registry


@pytest.fixture
def other_weights_dir(tmp_path, weights_file) -> Path:
    """A folder holding a copy of the weights with one integer changed (n0_bh + 1)."""
    folder = tmp_path / "other_weights"
    folder.mkdir()
    with np.load(weights_file) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    data["n0_bh"] = np.asarray(data["n0_bh"]) + 1
    with open(folder / weights_file.name, "wb") as fh:
        np.savez(fh, **data)
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DCOMP_WEIGHTS_DIR", "DCOMP_DEBUG")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path):
    """run_cli(*args, input=bytes, env={...}, cwd=path) -> CompletedProcess (bytes stdout/stderr)."""

    def run(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dcomp", *args], input=input, capture_output=True,
                              cwd=cwd or tmp_path, env=cli_env(**(env or {})), timeout=timeout)

    return run


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Non-blank stderr lines (a transient progress display may leave a blank one)."""
    return [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]


def assert_one_error_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """Exit `code`, exactly one stderr line, starting 'dcomp: error:', no traceback."""
    text = proc.stderr.decode("utf-8", "replace")
    lines = stderr_lines(proc)
    assert proc.returncode == code, (proc.returncode, text)
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    assert lines[0].startswith("dcomp: error:"), text
    return lines[0]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors and convolutions: with two torch threads contending for two cores (other
    work beside the tests) they ran 5-25x slower than with one. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def split_payload(payload: bytes) -> tuple[list[bytes], bytes]:
    """A coefficient payload as (its escape varints, the ANS words)."""
    from dcomp.varint import read_varint

    n, pos = read_varint(payload, 0)
    escapes = []
    for _ in range(n):
        start = pos
        _, pos = read_varint(payload, pos)
        escapes.append(payload[start:pos])
    return escapes, payload[pos:]
