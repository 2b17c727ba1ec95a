"""Thread control: one BLAS thread for the many small products of a wavefront decoder, all
cores for the few large ones of an encoder (and for mlp's encoder kernels), unless capped.

OpenBLAS threads spin while they wait, which makes small products 10x slower when another
process is busy (measured), so dcomp starts with one thread (dcomp/__init__.py) and opens
more only around large products. A user's own OPENBLAS_NUM_THREADS is left alone.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

_user_set = "OPENBLAS_NUM_THREADS" in os.environ and os.environ.get("DCOMP_BLAS_DEFAULTED") != "1"
_setter = None
_getter = None


def _find() -> None:
    global _setter, _getter
    if _setter is not None:
        return
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        libs = set()
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    _setter, _getter = setter, getter
                    return
    _setter = _getter = False


_cap: int | None = None  # set by cap_threads


def cap_threads(n: int) -> None:
    """Use at most n threads for each of dcomp's computations in this process, BLAS and
    dcomp's own kernels: for a process that shares the cores with others doing the same work
    (a batch worker), where more threads only oversubscribe them (mlp 3x slower, measured)."""
    global _cap
    _cap = max(1, n)


def usable_cores() -> int:
    """The cores this process may run on (taskset, cgroups' affinity), not the machine's: more
    BLAS threads than that only contend (5x slower measured under taskset -c 1). At most the
    cap_threads cap."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, _cap) if _cap is not None else cores


@contextmanager
def many_threads(limit: int = 4):
    """Use up to `limit` cores for BLAS inside the block (no-op without OpenBLAS)."""
    _find()
    if _user_set or not _setter:
        yield
        return
    before = _getter()
    _setter(max(1, min(limit, usable_cores())))
    try:
        yield
    finally:
        _setter(before)
