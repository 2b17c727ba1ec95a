"""Loops compiled by numba, with its on-disk cache, and the fallback where nothing can be cached.

numba keys its cache by the source file and the CPU: in `$NUMBA_CACHE_DIR` when that is set,
else in `__pycache__` beside the source, else (a read-only install) in `~/.cache/numba`.
Where none can be written, numba refuses `cache=True`; the loops are then compiled in every
process, with a warning and identical results. numba is imported by the first call: only
what runs compiled loops loads it.
"""
from __future__ import annotations

import warnings
from typing import Callable


def compiled(function: Callable, **options) -> Callable:
    """`function` compiled without the GIL (so that threads run it side by side), cached."""
    import numba
    try:
        return numba.njit(cache=True, nogil=True, **options)(function)
    except RuntimeError as exc:  # no cache location writable
        warnings.warn(f"{function.__module__}'s loops compile in every process ({exc})", RuntimeWarning,
                      stacklevel=2)
        return numba.njit(nogil=True, **options)(function)
