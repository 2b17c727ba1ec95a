"""Crafted files: whatever the bytes, `decompress` returns an image of the header's shape or
raises a DcompError, within a time bound and bounded memory.

Every CRC is recomputed after a mutation, so the method decoders themselves must cope (the
CRCs would otherwise catch nearly everything). The fuzz run goes in a subprocess with its data
segment capped at 2 GB above what it starts with, so a decoder that overreaches fails the test
with a MemoryError instead of swapping the machine, and an abort names the file that caused it.
`make fuzz` runs a longer fuzz: DCOMP_FUZZ_N files (default 500), seed DCOMP_FUZZ_SEED.

Then one regression test per finding of the first fuzzing run (formats/SPEC.md says which rule
each one broke), measured with tracemalloc: every refusal must come before anything of the
declared image's size is allocated.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

import dcomp
from dcomp import container, registry
from dcomp.container import Container, Header
from dcomp.varint import write_varint
from dcomp.errors import CorruptFileError, DcompError, LimitError, WeightsError
from dcomp.limits import DEFAULT_MAX_PIXELS

from conftest import cli_env, load_fixture

FUZZ_N = int(os.environ.get("DCOMP_FUZZ_N", "500"))
FUZZ_SEED = int(os.environ.get("DCOMP_FUZZ_SEED", "0"))
CASE_SECONDS = 20.0  # the target for any crafted file, on this slow machine too
MEMORY_HEADROOM = 2 << 30  # bytes a decode may allocate beyond what the process holds
REFUSAL_SECONDS = 2.0  # a refusal before the work: a small fraction of that
REFUSAL_BYTES = 32 << 20  # and nothing of the declared image's size (numpy's allocations)
# Sizes a mutation writes into the header: huge, at the pixel limit, odd, and degenerate.
SIZES = [(16777216, 1), (1, 16777216), (8388608, 2), (46340, 46340), (65536, 32768), (8192, 8192),
         (4096, 4096), (262144, 2), (1, 1), (1, 2), (2, 1), (7, 9), (8, 8), (9, 7), (33, 21), (34, 20),
         (21, 33), (64, 48), (300, 7)]
PHOTO = load_fixture("kodim23_33x21.png")  # (21, 33, 3)


# ---------------------------------------------------------------- building and crafting files

def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """A file as (header without its CRC, section payloads)."""
    _, pos = container.parse_header(data)
    return data[:pos - 4], container.parse(data).sections


def join(body: bytes, sections: list[bytes]) -> bytes:
    """The inverse of split, every CRC recomputed."""
    out = [body, zlib.crc32(body).to_bytes(4, "little")]
    for payload in sections:
        out += [write_varint(len(payload)), payload, zlib.crc32(payload).to_bytes(4, "little")]
    return b"".join(out)


def relabel(data: bytes, width: int, height: int) -> bytes:
    """The same sections under a header declaring another size (SPEC.md Header), CRC recomputed."""
    body, sections = split(data)
    return join(body[:8] + write_varint(width - 1) + write_varint(height - 1) + body[-1:], sections)


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    return {"RGB": image, "L": np.ascontiguousarray(image[:, :, 1]),
            "RGBA": np.concatenate([image, (image[:, :, :1] // 2 + 100)], axis=2)}


def mlp_sources() -> dict[str, bytes]:
    """Small valid mlp files: L/RGB/RGBA in the predictive mode, the filtered mode (a gradient
    of 256 levels) and the palette modes (a blocky drawing; 64 colours of a ramp, packed),
    stored noise, and a hand-made filtered payload with the xz back-end."""
    drawing = np.kron(np.random.default_rng(2).integers(0, 4, (3, 4, 3)) * 80, np.ones((7, 8, 1))).astype(np.uint8)
    level = (np.add.outer(np.arange(24) * 7, np.arange(32) * 5) % 256).astype(np.uint8)
    gradient = np.stack([level, (level.astype(int) * 3 % 256).astype(np.uint8), 255 - level], axis=2)
    photos = variants(PHOTO) | {"L": np.ascontiguousarray(load_fixture("kodim03_64x48.png")[:21, :33, 1])}
    out = {f"mlp-predictive-{mode}": dcomp.compress(image) for mode, image in photos.items()}
    for mode, image in variants(gradient).items():
        out[f"mlp-filtered-{mode}"] = dcomp.compress(image)
    for mode, image in variants(drawing).items():
        out[f"mlp-palette-{mode}"] = dcomp.compress(image)
    ramp = (np.arange(64)[:, None] * np.array([3, 2, 1])[None, :] + 20).astype(np.uint8)
    out["mlp-palette-packed"] = dcomp.compress(ramp[np.kron(np.random.default_rng(3).integers(0, 64, (6, 8)),
                                                            np.ones((4, 4), int))])
    out["mlp-stored"] = dcomp.compress(np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    out["mlp-filtered-xz"] = Container(Header(1, registry.get("mlp").model_id(), 10, 6, "L"),
                                       [bytes([1, 0, 1]) + _xz(bytes(range(60)))]).to_bytes()
    return out


def lossy_sources() -> dict[str, bytes]:
    """Every lossy method whose weights are installed and usable (GAN decoders trained for
    other cnn-ae-ft weights are refused, and skipped here), L/RGB/RGBA, lowest and highest
    quality."""
    out = {}
    for method in [m for m in registry.names() if not registry.get(m).lossless]:
        if not (registry.weights_dir() / registry.METHODS[method][3]).is_file():
            continue
        try:
            registry.get(method).model_id()
        except WeightsError:
            continue
        for mode, image in variants(PHOTO).items():
            for quality in (1, 8):
                out[f"{method}-q{quality}-{mode}"] = dcomp.compress(image, method, quality)
    return out


def _xz(raw: bytes) -> bytes:
    import lzma
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])


PAYLOAD_MUTATIONS = ("flip", "byte", "bytes", "truncate", "extend", "insert", "delete")


def mutate_payload(rng: np.random.Generator, kind: str, payload: bytes) -> bytes:
    out = bytearray(payload)
    if not out:
        return bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
    at = int(rng.integers(len(out)))
    if kind == "flip":
        out[at] ^= 1 << int(rng.integers(8))
    elif kind == "byte":  # a count or length field set to a small, large or random value
        out[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))]))
    elif kind == "bytes":
        for pos in rng.integers(len(out), size=int(rng.integers(2, 9))):
            out[int(pos)] = int(rng.integers(256))
    elif kind == "truncate":
        del out[at:]
    elif kind == "extend":
        out += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == "insert":
        out.insert(at, int(rng.integers(256)))
    else:  # delete
        del out[at]
    return bytes(out)


def mutate(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    """One random mutation and its name; CRCs recomputed, except for raw damage."""
    kind = str(rng.choice(PAYLOAD_MUTATIONS + ("size", "size+flip", "header", "sections", "raw")))
    if kind == "raw":  # ordinary damage: a cut or a flipped bit, CRCs as they are
        out = bytearray(data)
        if rng.random() < 0.5:
            return "raw cut", bytes(out[:int(rng.integers(len(out)))])
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
        return "raw flip", bytes(out)
    body, sections = split(data)
    sections = sections or [b""]  # a file that lost its sections gets one back
    s = int(rng.integers(len(sections)))
    if kind.startswith("size"):  # width and height rewritten (SPEC.md Header)
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        body = body[:8] + write_varint(width - 1) + write_varint(height - 1) + body[-1:]
        kind += f" {width}x{height}"
        if kind.startswith("size+flip"):
            sections[s] = mutate_payload(rng, "flip", sections[s])
    elif kind == "header":  # method id, model id or format byte
        body = bytearray(body)
        body[int(rng.choice([3, 4, 5, 6, 7, len(body) - 1]))] ^= 1 << int(rng.integers(8))
        body = bytes(body)
    elif kind == "sections":  # one missing, or one too many
        sections = sections[:-1] if rng.random() < 0.5 else sections + [sections[s]]
    else:
        sections[s] = mutate_payload(rng, kind, sections[s])
    return kind, join(body, sections)


def check(data: bytes) -> str | None:
    """None if decompress answers as it must, else what went wrong."""
    start = time.perf_counter()
    try:
        out = dcomp.decompress(data, "cpu")
    except DcompError:
        outcome = None
    except BaseException as exc:  # noqa: BLE001 - anything else is what this test is for
        outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:  # the header parsed, since decompress did
        h = container.parse_header(data)[0]
        shape = (h.height, h.width) if h.channels == 1 else (h.height, h.width, h.channels)
        outcome = None if out.dtype == np.uint8 and out.shape == shape else f"returned {out.dtype} {out.shape}"
    seconds = time.perf_counter() - start
    if outcome is None and seconds > CASE_SECONDS:
        outcome = f"took {seconds:.1f} s"
    return outcome


def fuzz(n: int, seed: int, failures_dir: Path) -> dict:
    """n mutated files, round-robin over the sources; failing files are saved for replay."""
    rng = np.random.default_rng(seed)
    files = mlp_sources() | lossy_sources()
    names = sorted(files)
    failures = []
    for i in range(n):
        name = names[i % len(names)]
        kind, data = mutate(rng, files[name])
        if rng.random() < 0.15:  # a second mutation on top of the first
            try:
                kind2, data = mutate(rng, data)
                kind += " + " + kind2
            except DcompError:
                pass
        print(f"case {i}: {name} {kind}", file=sys.stderr, flush=True)  # names the culprit of a crash
        problem = check(data)
        if problem:
            path = failures_dir / f"case{i}.dcz"
            path.write_bytes(data)
            failures.append(f"case {i} ({name}, {kind}, saved as {path}): {problem}")
    return {"cases": n, "sources": names, "failures": failures}


def _cap_memory() -> None:
    """Cap the data segment at what the process holds now plus MEMORY_HEADROOM."""
    with open("/proc/self/status") as status:
        data_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    limit = data_kb * 1024 + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


# ---------------------------------------------------------------- the fuzz run

@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the memory cap")
def test_fuzz_mutated_files_fail_cleanly(tmp_path):
    budget = 120 + 2 * FUZZ_N  # seconds: a hung decoder fails the test instead of stalling it
    # The worker reads the weights this process sees (cli_env alone drops DCOMP_WEIGHTS_DIR).
    env = cli_env(DCOMP_WEIGHTS_DIR=str(registry.weights_dir()))
    proc = subprocess.run([sys.executable, __file__, str(FUZZ_N), str(FUZZ_SEED), str(tmp_path)],
                          capture_output=True, env=env, timeout=budget, cwd=tmp_path)
    last = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    assert proc.returncode == 0, f"fuzz worker died (exit {proc.returncode}) after: {last}"
    report = json.loads(proc.stdout)
    assert report["cases"] == FUZZ_N
    assert any(s.startswith("cnn-ae-ft") for s in report["sources"]) or \
        not (registry.weights_dir() / "cnn-ae-ft.npz").is_file()
    assert not report["failures"], "\n".join(report["failures"][:20])


def test_fuzz_sources_cover_every_mlp_mode():
    modes = {name: container.parse(data).sections[0][0] for name, data in mlp_sources().items()}
    assert {modes["mlp-stored"], modes["mlp-filtered-RGB"], modes["mlp-predictive-RGB"],
            modes["mlp-palette-RGB"], modes["mlp-palette-packed"]} == {0, 1, 2, 3, 4}
    assert all(modes[f"mlp-predictive-{m}"] == 2 for m in ("L", "RGB", "RGBA"))
    assert all(modes[f"mlp-filtered-{m}"] == 1 for m in ("L", "RGB", "RGBA"))
    assert all(modes[f"mlp-palette-{m}"] == 3 for m in ("RGB", "RGBA"))  # L: filtered is as small


# ---------------------------------------------------------------- regressions

def refused(data: bytes, error=CorruptFileError, match: str | None = None, **kwargs) -> None:
    """Assert decompress refuses `data` with `error` quickly and before allocating anything
    large."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            dcomp.decompress(data, "cpu", **kwargs)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < REFUSAL_SECONDS, seconds
    assert peak < REFUSAL_BYTES, peak


@pytest.fixture(scope="module")
def lossy_files():
    if not all((registry.weights_dir() / registry.METHODS[m][3]).is_file() for m in ("cnn-ae", "cnn-ae-ft")):
        pytest.skip("no lossy weights installed")
    return {m: dcomp.compress(PHOTO[:20, :20], m, 4) for m in ("cnn-ae", "cnn-ae-ft")}


@pytest.mark.parametrize("method", ["cnn-ae", "cnn-ae-ft"])
@pytest.mark.parametrize("size", [(16777216, 1), (8388608, 2), (8192, 8192)])
def test_lossy_small_file_relabelled_large_is_refused_before_allocating(lossy_files, method, size):
    """Findings 1 and 2: a latent array of 3 GiB (16777216x1), or 6-8 s, 2+ GB and a
    MemoryError in the context bins (8388608x2); now the ANS length bound refuses them."""
    refused(relabel(lossy_files[method], *size), match="too short")


@pytest.mark.parametrize("method", ["cnn-ae", "cnn-ae-ft"])
@pytest.mark.parametrize("size", [(46340, 46340), (65536, 32768)])
def test_lossy_over_the_pixel_limit(lossy_files, method, size):
    data = relabel(lossy_files[method], *size)
    refused(data, LimitError, match="over the limit")
    refused(data, match="too short", max_pixels=1 << 31)  # and within a raised limit, the bound


def test_lossy_73_byte_file_relabelled_4096_square_is_refused():
    """Finding 3: decoding past the end of an ANS stream yields symbols forever, so this
    'decoded' in 12 s and 1.8 GB. A stream must hold what its symbols cost at the least."""
    data = dcomp.compress(PHOTO[:8, :8], "cnn-ae", 1)
    assert len(data) < 80
    refused(relabel(data, 4096, 4096), match="too short")


def test_lossy_relabelled_within_the_bound_decodes_fast_or_fails(lossy_files):
    """What the bound lets through decodes quickly (no end marker: possibly to nonsense)."""
    for size in ((40, 40), (80, 64), (160, 160)):
        start = time.perf_counter()
        try:
            out = dcomp.decompress(relabel(lossy_files["cnn-ae"], *size), "cpu")
        except DcompError:
            continue
        finally:
            assert time.perf_counter() - start < 5
        assert out.shape == (size[1], size[0], 3)


def test_mlp_over_the_pixel_limit_and_within_a_raised_one():
    """Finding 4: a 46340x46340 header allocated the whole output before looking at the data."""
    data = relabel(dcomp.compress(PHOTO), 46340, 46340)
    refused(data, LimitError, match="46340x46340 pixels is over the limit of 67108864 pixels")
    refused(data, match="too short", max_pixels=1 << 31)


def _predictive_flat(width: int, height: int, mode: str = "RGB") -> bytes:
    """A valid predictive file of a flat image by hand (one band, trained head, one context,
    zstd streams): a few hundred bytes whatever the size, as the old format allowed."""
    c = len(mode)
    border = zstandard.ZstdCompressor(level=19).compress(bytes(c * (width + height - 1)))
    interior = max(height - 1, 0) * max(width - 1, 0)
    table, data = [write_varint(c)], []
    for _ in range(c):
        if interior:
            frame = zstandard.ZstdCompressor(level=19).compress(bytes(interior))
            table.append(bytes([2]) + write_varint(interior))
            data.append(write_varint(len(frame)) + frame)
        else:
            table.append(bytes([0]) + write_varint(0))
    payload = (bytes([2, 0]) + write_varint(len(border)) + border + bytes([0, 1])
               + b"".join(table) + b"".join(data))
    return Container(Header(1, registry.get("mlp").model_id(), width, height, mode), [payload]).to_bytes()


@pytest.mark.parametrize("size", [(16777216, 1), (262144, 2), (8192, 8192), (2, 262144)])
def test_mlp_predictive_file_too_short_for_its_work_is_refused(size):
    """Finding 5: 16777216x1 RGB in 1,592 bytes decoded with a 2.75 GB peak, 262144x2 in 167
    bytes took 29.5 s (one numpy step per column). The predictive mode must now pay for its
    decoding work (SPEC.md, mode 2, work bound)."""
    data = _predictive_flat(*size)
    assert len(data) < 7000
    refused(data, match="predictive payload too short")


def _filtered_without_content_size(width: int, height: int, mode: str, raw_bytes: int) -> bytes:
    frame = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(bytes(raw_bytes))
    header = Header(1, registry.get("mlp").model_id(), width, height, mode)
    return Container(header, [bytes([1, 0, 0]) + frame]).to_bytes()


def test_mlp_zstd_frame_without_content_size_is_streamed():
    """Finding 6: a 43-byte frame declaring no content size, 16777216x128 RGBA: zstandard
    allocated max_output_size (8 GiB) up front. Now the frame is streamed and stops where the
    data does; at the pixel limit and beyond a raised one."""
    refused(_filtered_without_content_size(8192, 8192, "RGBA", 1 << 20), match="fewer bytes")
    big = _filtered_without_content_size(16777216, 128, "RGBA", 1 << 20)
    assert len(big) < 100
    refused(big, LimitError)
    refused(big, match="fewer bytes", max_pixels=1 << 31)
    # One byte more than the image: refused as soon as it is produced, not after the frame.
    refused(_filtered_without_content_size(1000, 1000, "L", 10**6 + 1), match="more bytes")
    ok = _filtered_without_content_size(100, 50, "RGB", 15000)
    assert np.array_equal(dcomp.decompress(ok), np.zeros((50, 100, 3), np.uint8))


def test_pixel_limit_default_and_message():
    assert DEFAULT_MAX_PIXELS == 1 << 26
    data = relabel(dcomp.compress(PHOTO), 16384, 8192)
    with pytest.raises(LimitError, match=r"^image of 16384x8192 pixels is over the limit of 67108864 pixels "
                                         r"\(raise it with --max-pixels\)$"):
        dcomp.decompress(data)
    # At the limit: not a LimitError (the work bound refuses this one).
    refused(relabel(dcomp.compress(PHOTO), 8192, 8192), match="too short")
    with pytest.raises(LimitError, match="33x21 pixels is over the limit of 692"):
        dcomp.decompress(dcomp.compress(PHOTO), max_pixels=692)
    assert dcomp.decompress(dcomp.compress(PHOTO), max_pixels=693).shape == PHOTO.shape


def test_compress_pixel_limit_before_converting():
    """compress refuses from the size alone: this view of 200 MB is never materialized."""
    from PIL import Image

    huge = np.broadcast_to(np.uint8(7), (8193, 8192, 3))
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="8192x8193 pixels is over the limit of 67108864"):
            dcomp.compress(huge)
        assert tracemalloc.get_traced_memory()[1] < REFUSAL_BYTES
    finally:
        tracemalloc.stop()
    with pytest.raises(LimitError, match="33x21 pixels"):
        dcomp.compress(Image.fromarray(PHOTO), max_pixels=692)
    assert dcomp.decompress(dcomp.compress(PHOTO, max_pixels=693)).shape == PHOTO.shape


if __name__ == "__main__":  # the fuzz worker: n, seed, folder for failing files
    import torch

    torch.set_num_threads(1)  # tiny convolutions: a second thread only contends (tests/test_cnn_ae.py)
    _cap_memory()
    print(json.dumps(fuzz(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))))
