"""The .dcz container: header plus CRC-checked, length-prefixed sections (formats/SPEC.md).

Knows nothing about methods or networks; it only frames their bytes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from dcomp.errors import CorruptFileError, UnsupportedError
from dcomp.varint import read_varint, write_varint

MAGIC = b"\xdc\x5a"
VERSION = 1
CHANNEL_MODES = ("L", "RGB", "RGBA")
MAX_SIDE = 1 << 24
MAX_PIXELS = 1 << 31


@dataclass
class Header:
    method_id: int
    model_id: bytes
    width: int
    height: int
    mode: str  # one of CHANNEL_MODES
    quality: int = 0
    bit_depth: int = 8

    @property
    def channels(self) -> int:
        return len(self.mode)

    def to_bytes(self) -> bytes:
        if not 1 <= self.method_id <= 255:
            raise ValueError("method id out of range")
        if len(self.model_id) != 4:
            raise ValueError("model id must be 4 bytes")
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise UnsupportedError(f"image size {self.width}x{self.height} out of range")
        if self.width * self.height > MAX_PIXELS:
            raise UnsupportedError(f"image of {self.width * self.height} pixels is too large")
        if not 0 <= self.quality <= 15 or self.bit_depth != 8:
            raise ValueError("quality or bit depth out of range")
        fmt = CHANNEL_MODES.index(self.mode) | (self.quality << 4)
        body = (MAGIC + bytes([VERSION, self.method_id]) + self.model_id
                + write_varint(self.width - 1) + write_varint(self.height - 1) + bytes([fmt]))
        return body + zlib.crc32(body).to_bytes(4, "little")


@dataclass
class Container:
    header: Header
    sections: list[bytes] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        parts = [self.header.to_bytes()]
        for payload in self.sections:
            parts += [write_varint(len(payload)), payload, zlib.crc32(payload).to_bytes(4, "little")]
        return b"".join(parts)


def framed_size(payload: bytes) -> int:
    """Bytes a section with this payload takes in a file: its length, the payload, its CRC."""
    return len(write_varint(len(payload))) + len(payload) + 4


def parse_header(data: bytes) -> tuple[Header, int]:
    """Parse and check the header; return it and the offset of the first section."""
    if len(data) < 2 or data[:2] != MAGIC:
        raise CorruptFileError("not a .dcz file (wrong magic bytes)")
    if len(data) < 4:
        raise CorruptFileError("truncated in header")
    version = data[2]
    if version == 0:
        raise CorruptFileError("corrupted header (version 0)")
    if version > VERSION:
        raise UnsupportedError(
            f"made by a newer dcomp (format version {version}; this one reads version {VERSION})")
    method_id = data[3]
    if len(data) < 8:
        raise CorruptFileError("truncated in header")
    model_id = bytes(data[4:8])
    width_m1, pos = read_varint(data, 8, "header")
    height_m1, pos = read_varint(data, pos, "header")
    if pos + 5 > len(data):
        raise CorruptFileError("truncated in header")
    fmt = data[pos]
    pos += 1
    stored_crc = int.from_bytes(data[pos:pos + 4], "little")
    if zlib.crc32(data[:pos]) != stored_crc:
        raise CorruptFileError("corrupted header (CRC mismatch)")
    pos += 4
    if method_id == 0:
        raise CorruptFileError("corrupted header (method id 0)")
    if fmt & 0x03 == 3 or fmt & 0x0C:
        raise UnsupportedError("unsupported channel layout or bit depth in header")
    width, height = width_m1 + 1, height_m1 + 1
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise CorruptFileError(f"corrupted header (image size {width}x{height})")
    header = Header(method_id, model_id, width, height, CHANNEL_MODES[fmt & 0x03], fmt >> 4)
    return header, pos


def parse(data: bytes) -> Container:
    """Parse a whole file, checking every CRC; raise CorruptFileError naming the bad part."""
    header, pos = parse_header(data)
    sections: list[bytes] = []
    view = memoryview(data)
    while pos < len(data):
        index = len(sections)
        length, pos = read_varint(view, pos, f"section {index}")
        if pos + length + 4 > len(data):
            raise CorruptFileError(f"truncated in section {index}")
        payload = bytes(view[pos:pos + length])
        crc = int.from_bytes(view[pos + length:pos + length + 4], "little")
        if zlib.crc32(payload) != crc:
            raise CorruptFileError(f"corrupted section {index} (CRC mismatch)")
        sections.append(payload)
        pos += length + 4
    return Container(header, sections)
