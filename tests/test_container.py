"""The .dcz container (formats/SPEC.md): header, varints, sections, and what a reader does
with damaged or foreign files, through the API and through the CLI."""
from __future__ import annotations

import lzma
import struct
import zlib

import numpy as np
import pytest
import zstandard

import dcomp
from dcomp import registry
from dcomp.container import Container, Header, parse, parse_header
from dcomp.varint import read_varint, write_varint
from dcomp.errors import CorruptFileError, DcompError, UnknownMethodError, UnsupportedError

from conftest import assert_one_error_line

MODEL = b"\x01\x02\x03\x04"


# ---------------------------------------------------------------- helpers

def header_len(data: bytes) -> int:
    return parse_header(data)[1]


def fix_header_crc(data: bytes | bytearray) -> bytes:
    """Recompute the header CRC after patching header bytes (the varints must still parse)."""
    data = bytearray(data)
    _, pos = read_varint(data, 8)
    _, pos = read_varint(data, pos)
    pos += 1  # format byte
    data[pos:pos + 4] = zlib.crc32(bytes(data[:pos])).to_bytes(4, "little")
    return bytes(data)


def patched(data: bytes, offset: int, value: int, fix_crc: bool = True) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return fix_header_crc(out) if fix_crc else bytes(out)


def regions(data: bytes) -> dict[str, range]:
    """Byte ranges of the header, the first section's length varint, payload and CRC."""
    hlen = header_len(data)
    length, start = read_varint(data, hlen)
    return {"header": range(0, hlen), "length": range(hlen, start),
            "payload": range(start, start + length), "crc": range(start + length, start + length + 4)}


@pytest.fixture(scope="module")
def dcz_files(fixture_arrays) -> dict[str, tuple[bytes, np.ndarray]]:
    """A few real files: a photo crop (predictive mode), noise (stored), flat (filtered)."""
    rng = np.random.default_rng(5)
    images = {
        "photo": fixture_arrays["kodim23_33x21.png"],
        "noise": rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
        "flat": np.full((20, 13), 77, dtype=np.uint8),
    }
    return {name: (dcomp.compress(img), img) for name, img in images.items()}


# ---------------------------------------------------------------- varints and header

@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16383, 16384, (1 << 24) - 1, (1 << 32) - 1, (1 << 35) - 1])
def test_varint_round_trip(value):
    raw = write_varint(value)
    assert read_varint(raw + b"\xaa", 0) == (value, len(raw))
    assert len(raw) == max(1, (value.bit_length() + 6) // 7)


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\xff\xff", b"\x80\x00", b"\xff\x00", b"\xff\xff\xff\xff\xff\x01"])
def test_varint_rejects_truncated_overlong_and_non_minimal(raw):
    with pytest.raises(CorruptFileError):
        read_varint(raw, 0)


def test_varint_rejects_negative():
    with pytest.raises(ValueError):
        write_varint(-1)


@pytest.mark.parametrize("width,height,mode,quality", [
    (1, 1, "L", 0), (32, 32, "RGB", 0), (128, 128, "RGBA", 15), (129, 1, "L", 3), (1, 129, "RGB", 0),
    (16384, 16384, "RGB", 0), (1 << 24, 1, "L", 0), (1, 1 << 24, "RGBA", 7), (46340, 46340, "L", 0),
])
def test_header_round_trip(width, height, mode, quality):
    header = Header(7, MODEL, width, height, mode, quality)
    raw = header.to_bytes()
    parsed, pos = parse_header(raw + b"rest")
    assert pos == len(raw)
    assert parsed == header
    assert parsed.channels == len(mode)


@pytest.mark.parametrize("width,height,size", [
    (32, 32, 15), (1, 1, 15), (128, 128, 15), (129, 128, 16), (128, 129, 16), (16384, 16384, 17)])
def test_header_size(width, height, size):
    assert len(Header(1, MODEL, width, height, "RGB").to_bytes()) == size


def test_real_file_header_is_15_bytes_for_32x32_rgb():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = dcomp.compress(img)
    assert data[:2] == b"\xdc\x5a" and data[2] == 1 and data[3] == 1
    assert header_len(data) == 15
    fields = dcomp.info(data)
    assert fields["header_bytes"] == 15
    assert (fields["width"], fields["height"], fields["mode"], fields["method"]) == (32, 32, "RGB", "mlp")
    assert fields["file_bytes"] == len(data)
    assert sum(fields["sections"]) + 15 < len(data)


@pytest.mark.parametrize("width,height", [(0, 5), (5, 0), ((1 << 24) + 1, 1), (1 << 16, (1 << 15) + 1)])
def test_header_refuses_bad_geometry(width, height):
    with pytest.raises(UnsupportedError):
        Header(1, MODEL, width, height, "L").to_bytes()


def test_empty_image_is_refused():
    with pytest.raises(DcompError):
        dcomp.compress(np.zeros((0, 5), dtype=np.uint8))


def test_container_round_trip_with_sections():
    header = Header(1, MODEL, 3, 2, "L")
    sections = [b"", b"abc", bytes(range(256)) * 3]
    data = Container(header, sections).to_bytes()
    parsed = parse(data)
    assert parsed.header == header and parsed.sections == sections
    # A file cut exactly at a section boundary is still a valid container (progressive methods).
    cut = len(data) - (2 + 768 + 4)
    assert parse(data[:cut]).sections == sections[:2]


# ---------------------------------------------------------------- damaged files, API

def test_truncated_file_every_position(dcz_files):
    for name, (data, _) in dcz_files.items():
        for n in range(len(data)):
            with pytest.raises(DcompError) as exc:
                dcomp.decompress(data[:n])
            if n >= 15:
                assert "truncated" in str(exc.value), (name, n, exc.value)
            if n != header_len(data):  # a header alone is a valid container with no sections
                with pytest.raises(DcompError):
                    dcomp.info(data[:n])


def test_header_only_file_names_missing_section(dcz_files):
    data, _ = dcz_files["photo"]
    with pytest.raises(CorruptFileError, match="needs 1 section, file has 0"):
        dcomp.decompress(data[:header_len(data)])


@pytest.mark.parametrize("region", ["header", "length", "payload", "crc"])
def test_flipped_byte_in_each_region(dcz_files, region):
    for name, (data, _) in dcz_files.items():
        span = regions(data)[region]
        positions = list(span) if len(span) <= 24 else list(np.linspace(span.start, span.stop - 1, 24).astype(int))
        for pos in positions:
            for mask in (0x01, 0x80, 0xFF):
                bad = bytearray(data)
                bad[pos] ^= mask
                with pytest.raises(DcompError) as exc:
                    dcomp.decompress(bytes(bad))
                message = str(exc.value)
                if region == "payload" or region == "crc":
                    assert "section 0" in message, (name, pos, mask, message)


def test_wrong_magic(dcz_files):
    data, _ = dcz_files["photo"]
    for bad in (b"PK" + data[2:], b"\x89PNG\r\n\x1a\n" + data[8:], b"", b"\xdc", b"\xdc\x5b" + data[2:]):
        with pytest.raises(CorruptFileError):
            dcomp.decompress(bad)
    with pytest.raises(CorruptFileError, match="not a .dcz file"):
        dcomp.info(b"PK" + data[2:])


def test_future_version(dcz_files):
    data, _ = dcz_files["photo"]
    bad = patched(data, 2, 2)
    with pytest.raises(UnsupportedError, match="newer dcomp") as exc:
        dcomp.decompress(bad)
    assert "version 2" in str(exc.value)
    with pytest.raises(UnsupportedError):
        dcomp.info(bad)


def test_version_zero_is_corrupt(dcz_files):
    data, _ = dcz_files["photo"]
    with pytest.raises(CorruptFileError):
        dcomp.decompress(patched(data, 2, 0))


def test_unknown_method_id(dcz_files):
    data, _ = dcz_files["photo"]
    with pytest.raises(UnknownMethodError, match="unknown method id 7"):
        dcomp.decompress(patched(data, 3, 7))
    # info() does not decode: it reports the id instead of failing.
    assert dcomp.info(patched(data, 3, 7))["method"] == "unknown (7)"


def test_method_id_zero_is_corrupt(dcz_files):
    data, _ = dcz_files["photo"]
    with pytest.raises(CorruptFileError):
        dcomp.decompress(patched(data, 3, 0))


@pytest.mark.parametrize("fmt_bits", [0x03, 0x04, 0x08, 0x0C])
def test_reserved_format_bits(dcz_files, fmt_bits):
    data, _ = dcz_files["photo"]
    fmt_pos = header_len(data) - 5
    value = (data[fmt_pos] & ~0x03) | 0x03 if fmt_bits == 0x03 else data[fmt_pos] | fmt_bits
    with pytest.raises(UnsupportedError):
        dcomp.decompress(patched(data, fmt_pos, value))


def test_too_many_pixels_in_header():
    body = (b"\xdc\x5a\x01\x01" + MODEL + write_varint((1 << 24) - 1) + write_varint((1 << 24) - 1) + b"\x00")
    data = body + zlib.crc32(body).to_bytes(4, "little")
    with pytest.raises(CorruptFileError, match="image size"):
        dcomp.decompress(data)


def test_other_geometry_with_fixed_crc_is_an_error_not_a_crash(dcz_files):
    """Same sections, header claims another size (CRC recomputed): a clean DcompError."""
    for name in ("photo", "noise"):
        data, img = dcz_files[name]
        for new_width in (1, 2, img.shape[1] - 1, img.shape[1] + 1, 100):
            bad = patched(data, 8, new_width - 1)
            with pytest.raises(DcompError):
                dcomp.decompress(bad)


def _filtered_payload(raw: bytes, backend: int) -> bytes:
    """mlp mode 1 (filtered), filter 0 (none), by hand: independent of the encoder's choices."""
    if backend == 0:
        return bytes([1, 0, 0]) + zstandard.ZstdCompressor(level=3).compress(raw)
    return bytes([1, 0, 1]) + lzma.compress(raw, format=lzma.FORMAT_RAW,
                                            filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])


@pytest.mark.parametrize("backend", [0, 1])
def test_hand_made_filtered_payload_decodes(backend):
    raw = bytes(range(60))  # 6 x 10 L image, filter none: the samples themselves
    header = Header(1, registry.get("mlp").model_id(), 10, 6, "L")
    out = dcomp.decompress(Container(header, [_filtered_payload(raw, backend)]).to_bytes())
    assert out.tobytes() == raw and out.shape == (6, 10)


@pytest.mark.parametrize("backend", [0, 1])
def test_filtered_payload_longer_than_image_is_rejected(backend):
    raw = bytes(range(60))  # 60 samples, but the header says 5 x 6 = 30
    header = Header(1, registry.get("mlp").model_id(), 5, 6, "L")
    with pytest.raises(CorruptFileError):
        dcomp.decompress(Container(header, [_filtered_payload(raw, backend)]).to_bytes())


def test_extra_section_is_rejected(dcz_files):
    data, _ = dcz_files["photo"]
    extra = data + write_varint(3) + b"abc" + zlib.crc32(b"abc").to_bytes(4, "little")
    with pytest.raises(DcompError):
        dcomp.decompress(extra)


def test_crafted_payloads_with_valid_crc_never_crash(dcz_files):
    """Payload bytes changed and the section CRC recomputed: the method decoder itself must
    answer with a DcompError (or decode something of the right shape), never another exception."""
    rng = np.random.default_rng(11)
    for name, (data, img) in dcz_files.items():
        parsed = parse(data)
        payload = parsed.sections[0]
        positions = rng.choice(len(payload), size=min(len(payload), 16), replace=False)
        for pos in sorted(set(positions.tolist()) | {0, 1, 2, len(payload) - 1}):
            for value in (payload[pos] ^ 0x01, payload[pos] ^ 0xFF):
                bad = bytearray(payload)
                bad[pos] = value
                blob = Container(parsed.header, [bytes(bad)]).to_bytes()
                try:
                    out = dcomp.decompress(blob)
                except DcompError:
                    continue
                assert out.shape == img.shape and out.dtype == np.uint8
        for n in range(0, len(payload), max(1, len(payload) // 30)):
            try:
                out = dcomp.decompress(Container(parsed.header, [payload[:n]]).to_bytes())
            except DcompError:
                continue
            # Only a cut that loses nothing may pass (an xz stream's end marker, say).
            assert np.array_equal(out, img), (name, n)


def _zstd_frame_claiming(content_size: int) -> bytes:
    """A zstd frame whose header declares `content_size` bytes (8-byte field) but holds 3000."""
    frame = zstandard.ZstdCompressor(level=3).compress(b"\0" * 3000)
    assert frame[4] == 0x60  # single segment, 2-byte content size
    return frame[:4] + bytes([0xE0]) + struct.pack("<Q", content_size) + frame[6:]


def test_crafted_zstd_content_size_gives_dcomp_error():
    header = Header(1, registry.get("mlp").model_id(), 3000, 1, "L")
    payload = bytes([1, 0, 0]) + _zstd_frame_claiming(1 << 45)  # mode filtered, filter none, zstd
    data = Container(header, [payload]).to_bytes()
    with pytest.raises(DcompError):
        dcomp.decompress(data)


def test_info_fields(dcz_files):
    data, img = dcz_files["photo"]
    fields = dcomp.info(data)
    h, w, c = img.shape
    assert fields["bits_per_pixel"] == pytest.approx(len(data) * 8 / (w * h), abs=1e-3)
    assert fields["bits_per_subpixel"] == pytest.approx(len(data) * 8 / (w * h * c), abs=1e-3)
    assert fields["quality"] is None and fields["bit_depth"] == 8
    assert fields["model_id"] == registry.get("mlp").model_id().hex()


# ---------------------------------------------------------------- damaged files, CLI

def _damaged(data: bytes) -> dict[str, bytes]:
    r = regions(data)
    flip = lambda pos: data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1:]  # noqa: E731
    return {
        "truncated": data[:len(data) // 2],
        "header-flip": flip(r["header"].start + 9),
        "length-flip": flip(r["length"].start),
        "payload-flip": flip(r["payload"].start + len(r["payload"]) // 2),
        "crc-flip": flip(r["crc"].start + 1),
        "wrong-magic": b"XX" + data[2:],
        "future-version": patched(data, 2, 2),
        "unknown-method": patched(data, 3, 9),
    }


DAMAGE = ["truncated", "header-flip", "length-flip", "payload-flip", "crc-flip", "wrong-magic",
          "future-version", "unknown-method"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_cli_decompress_damaged(tmp_path, run_cli, dcz_files, damage):
    data, _ = dcz_files["photo"]
    (tmp_path / "bad.dcz").write_bytes(_damaged(data)[damage])
    proc = run_cli("decompress", "bad.dcz")
    line = assert_one_error_line(proc, 1)
    assert "bad.dcz" in line
    if damage == "future-version":
        assert "newer dcomp" in line
    if damage == "unknown-method":
        assert "unknown method id 9" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dcz"]  # no output, no temp file
    assert proc.stdout == b""


def test_cli_damaged_file_does_not_touch_existing_output(tmp_path, run_cli, dcz_files):
    data, _ = dcz_files["photo"]
    (tmp_path / "bad.dcz").write_bytes(_damaged(data)["payload-flip"])
    (tmp_path / "out.png").write_bytes(b"keep me")
    proc = run_cli("decompress", "bad.dcz", "-o", "out.png", "--force")
    assert_one_error_line(proc, 1)
    assert (tmp_path / "out.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dcz", "out.png"]


def test_cli_damaged_to_stdout_writes_nothing(tmp_path, run_cli, dcz_files):
    data, _ = dcz_files["photo"]
    proc = run_cli("decompress", "-", input=_damaged(data)["crc-flip"])
    assert_one_error_line(proc, 1)
    assert proc.stdout == b""


@pytest.mark.parametrize("damage", ["truncated", "future-version"])
def test_cli_info_damaged(tmp_path, run_cli, dcz_files, damage):
    data, _ = dcz_files["photo"]
    (tmp_path / "bad.dcz").write_bytes(_damaged(data)[damage])
    line = assert_one_error_line(run_cli("info", "bad.dcz"), 1)
    assert "bad.dcz" in line
