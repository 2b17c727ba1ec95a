"""LEB128 varints, as every part of a .dcz file writes its lengths and counts (formats/SPEC.md)."""
from __future__ import annotations

from dcomp.errors import CorruptFileError


def write_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes | memoryview, pos: int, what: str = "varint") -> tuple[int, int]:
    """Return (value, next position); raise CorruptFileError on truncation or overlong form."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise CorruptFileError(f"truncated in {what}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise CorruptFileError(f"corrupted {what} (non-minimal varint)")
            return value, pos + i + 1
    raise CorruptFileError(f"corrupted {what} (varint too long)")
