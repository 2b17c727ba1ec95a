"""What a reader can know about an ANS stream before decoding it: how short it may be.

The lossy methods' latents are coded with constriction's stack.AnsCoder (32-bit words,
PRECISION-bit frequencies). Such a stream has no end marker: decoding past the end of the
data does not fail, it yields each table's first symbol forever. So a reader checks, from
integers only, that the words can hold the symbols the header declares, and refuses a short
file relabelled as a large image before anything of the image's size exists (formats/SPEC.md).
"""
from __future__ import annotations

import numpy as np

from dcomp.entropy.laplace import PRECISION
from dcomp.errors import CorruptFileError
from dcomp.varint import read_varint, write_varint

WORD_BITS = 32
# The 64-bit state: while it holds fewer than 27 bits the symbols encoded can cost less than
# their floor (the very first ones nothing at all), so the bound allows this much on top.
STATE_SLACK_BITS = 64


def cost_floors(freq: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per table (table i is freq[offsets[i]:offsets[i + 1]]), 2**PRECISION minus its largest
    frequency: in units of 2**-PRECISION bits, a floor on what any symbol of the table costs.

    A symbol of probability p costs -log2(p) >= (1 - p) / ln 2 bits, and an ANS coder whose
    state holds at least 27 bits spends at least 1 - p on it: rounding loses less than the
    1 / ln 2 factor gains (worst case p = 1 - 2**-24, checked over every frequency)."""
    return (1 << PRECISION) - np.maximum.reduceat(freq.astype(np.int64), offsets[:-1])


def too_short(cost: int, n_words: int) -> bool:
    """Whether n_words of ANS data are fewer than symbols whose floors sum to `cost` (in units
    of 2**-PRECISION bits) take. Python integers: exact."""
    return cost > (WORD_BITS * n_words + STATE_SLACK_BITS) << PRECISION


# The escape list in front of the ANS words: a varint count, then the escaped values zigzag-mapped.

def escape_bytes(values: list[int]) -> bytes:
    return write_varint(len(values)) + b"".join(write_varint(2 * v if v >= 0 else -2 * v - 1) for v in values)


def read_escapes(payload: bytes, limit: int | None = None, of: str = "values") -> tuple[list[int], int]:
    """The escaped values and where the words start; a count above `limit` is corrupt before
    any is read. CorruptFileError (from the varints) on a cut or malformed list."""
    count, pos = read_varint(payload, 0)
    if limit is not None and count > limit:
        raise CorruptFileError(f"more escapes than {of}")
    values = []
    for _ in range(count):
        z, pos = read_varint(payload, pos)
        values.append(-(z >> 1) - 1 if z & 1 else z >> 1)
    return values, pos
