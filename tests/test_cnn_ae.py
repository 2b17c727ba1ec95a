"""The `cnn-ae` and `cnn-ae-ft` methods: round trips at every quality, rate and PSNR targets,
odd sizes and modes, seamless tiles, corrupted latent streams, the entropy coder under extreme
tables, the integer context model, determinism and model ids.

PSNR floors are loose so that retrained weights pass, and no test depends on exact sizes.
Every test works on a private copy of the installed weights, because `dcomp train` replaces
weights/ as it goes and a file made with one version does not decode with the next."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import dcomp
from dcomp import container, registry
from dcomp.varint import read_varint, write_varint
from dcomp.entropy import laplace
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.entropy.context_model import group_bins
from dcomp.entropy.dc import dc_from_residual, dc_residual
from dcomp.layers import BLOCK_LATENTS as LATENT
from dcomp.methods import cnn_ae, lossy

from conftest import assert_one_error_line, load_fixture

PHOTO = load_fixture("kodim03_64x48.png")   # (48, 64, 3)
SMALL = load_fixture("kodim23_33x21.png")   # (21, 33, 3)
QUALITIES = range(1, cnn_ae.QUALITIES + 1)


def encode_latents(weights: cnn_ae.Weights, y: np.ndarray, q: int) -> bytes:
    return weights.entropy.compress(y, q)


def decode_latents(weights: cnn_ae.Weights, payload: bytes, q: int, h: int, w: int) -> np.ndarray:
    return weights.entropy.decompress(payload, q, h, w)


def tables(weights: cnn_ae.Weights) -> tuple[np.ndarray, np.ndarray]:
    return weights.file.arrays["table_freq"], weights.file.arrays["table_offsets"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def bpp(data: bytes, image: np.ndarray) -> float:
    return len(data) * 8 / (image.shape[0] * image.shape[1])


def rd_cost(data: bytes, image: np.ndarray, quality: int) -> float:
    """lambda * MSE (0..255 units) + bits per pixel: what training and refinement minimize."""
    out = dcomp.decompress(data).astype(np.float64)
    return cnn_ae.LAMBDAS[quality - 1] * float(np.mean((out - image) ** 2)) + bpp(data, image)


def with_sections(data: bytes, sections: list[bytes]) -> bytes:
    """The same header with other section payloads, CRCs recomputed: what a file corrupted
    *before* framing looks like, so the corruption reaches the method's own checks."""
    return container.Container(container.parse(data).header, sections).to_bytes()


def split_payload(payload: bytes) -> tuple[list[bytes], bytes]:
    """A latent payload as (its escape varints, the ANS words)."""
    n, pos = read_varint(payload, 0)
    escapes = []
    for _ in range(n):
        start = pos
        _, pos = read_varint(payload, pos)
        escapes.append(payload[start:pos])
    return escapes, payload[pos:]


def join_payload(escapes: list[bytes], words: bytes, count: int | None = None) -> bytes:
    return write_varint(len(escapes) if count is None else count) + b"".join(escapes) + words


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The convolutions here are tiny: with two torch threads contending for two cores (other
    work beside the tests) they ran 5-25x slower than with one. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def weights_copy(tmp_path_factory):
    """DCOMP_WEIGHTS_DIR -> a private copy of the installed cnn-ae / cnn-ae-ft weights, with a
    codec cache of its own shared by this module's tests (the weights load once)."""
    source = registry.weights_dir()
    folder = tmp_path_factory.mktemp("cnn_weights")
    for name in ("cnn-ae.npz", "cnn-ae-ft.npz"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DCOMP_WEIGHTS_DIR", str(folder))
        mp.setattr(registry, "_cache", {})
        yield folder


@pytest.fixture(scope="module")
def ae_weights(weights_copy):
    if not (weights_copy / "cnn-ae.npz").is_file():
        pytest.skip("no cnn-ae weights installed")
    return weights_copy


@pytest.fixture(scope="module")
def ladder(ae_weights):
    """quality -> (file, decoded image) of the 64x48 crop."""
    out = {}
    for q in QUALITIES:
        data = dcomp.compress(PHOTO, "cnn-ae", q)
        out[q] = (data, dcomp.decompress(data))
    return out


LOG_TINY, LOG_HUGE = math.log(1e-3), math.log(500.0)


@pytest.fixture(scope="module")
def extreme(tmp_path_factory):
    """A freshly built model whose coding tables are extreme, saved as cnn-ae.npz in its own
    folder: quality index 0 has both scales 1e-3 (support 1: nearly every value escapes),
    1 has both 500 (support capped at MAX_SUPPORT), 2 mixes the two, 3 draws every scale and
    mixing weight at random, 4..7 keep the initial tables. Returns (model, folder, Weights)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the convolutions' random init: the same file on every run
        model = cnn_ae.build_model()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        model.entropy.log_scales[0] = LOG_TINY
        model.entropy.log_scales[1] = LOG_HUGE
        model.entropy.log_scales[2, ..., 0] = LOG_TINY
        model.entropy.log_scales[2, ..., 1] = LOG_HUGE
        model.entropy.mix_logit[2] = 0.0
        model.entropy.log_scales[3] = torch.from_numpy(rng.uniform(LOG_TINY, math.log(900.0), (LATENT, cnn_ae.BINS, 2)))
        model.entropy.mix_logit[3] = torch.from_numpy(rng.uniform(-30, 30, (LATENT, cnn_ae.BINS)))
    folder = tmp_path_factory.mktemp("extreme_weights")
    cnn_ae.save_weights(model, folder / "cnn-ae.npz", "cnn-ae")
    return model, folder, cnn_ae.Weights(folder / "cnn-ae.npz")


# ---------------------------------------------------------------- qualities and targets

def test_every_quality_round_trips(ladder):
    psnrs, sizes = [], []
    for q in QUALITIES:
        data, out = ladder[q]
        assert out.shape == PHOTO.shape and out.dtype == np.uint8
        assert dcomp.info(data)["quality"] == q and dcomp.info(data)["method"] == "cnn-ae"
        psnrs.append(psnr(PHOTO, out))
        sizes.append(len(data))
    steps = np.diff(psnrs)
    # Quality buys distortion: PSNR rises at every step, one flat step allowed, none falling.
    assert (steps >= 0).all() and (steps == 0).sum() <= 1, psnrs
    assert (np.diff(sizes) > 0).all(), sizes
    assert psnrs[0] >= 20, psnrs
    assert psnrs[-1] >= 33, psnrs
    assert sizes[-1] < PHOTO.size, sizes  # even q8 beats the raw 8-bit pixels


def test_target_bpp_picks_highest_quality_within_budget(ladder):
    rates = {q: bpp(ladder[q][0], PHOTO) for q in QUALITIES}
    # Between two qualities, exactly on one (the bound is inclusive), and above them all.
    targets = [(rates[3] + rates[4]) / 2, rates[5], rates[8] * 2]
    for target in targets:
        data = dcomp.compress(PHOTO, "cnn-ae", target_bpp=target)
        q = dcomp.info(data)["quality"]
        assert bpp(data, PHOTO) <= target
        if q < QUALITIES[-1]:
            assert bpp(dcomp.compress(PHOTO, "cnn-ae", q + 1), PHOTO) > target
        assert q == max(k for k in QUALITIES if rates[k] <= target)
        assert dcomp.decompress(data).shape == PHOTO.shape
    with pytest.raises(UnsupportedError, match="cannot reach"):
        dcomp.compress(PHOTO, "cnn-ae", target_bpp=0.001)


def test_target_psnr_picks_lowest_quality_reaching_it(ladder):
    quality_psnr = {q: psnr(PHOTO, ladder[q][1]) for q in QUALITIES}
    # Between two qualities, just under one, and below them all.
    targets = [(quality_psnr[3] + quality_psnr[4]) / 2, quality_psnr[6] - 1e-6, 10.0]
    for target in targets:
        data = dcomp.compress(PHOTO, "cnn-ae", target_psnr=target)
        q = dcomp.info(data)["quality"]
        assert psnr(PHOTO, dcomp.decompress(data)) >= target
        if q > 1:
            assert psnr(PHOTO, dcomp.decompress(dcomp.compress(PHOTO, "cnn-ae", q - 1))) < target
    assert dcomp.info(dcomp.compress(PHOTO, "cnn-ae", target_psnr=10.0))["quality"] == 1
    with pytest.raises(UnsupportedError, match="cannot reach"):
        dcomp.compress(PHOTO, "cnn-ae", target_psnr=99.0)


# ---------------------------------------------------------------- sizes and modes

@pytest.mark.parametrize("h, w", [(1, 1), (1, 9), (9, 1), (13, 7), (21, 33)])
def test_odd_sizes_round_trip(ae_weights, h, w):
    crop = np.ascontiguousarray(SMALL[:h, :w])
    for q in (1, 8):
        out = dcomp.decompress(dcomp.compress(crop, "cnn-ae", q))
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
    # At q8 the crop is recognisable, padding or not (edge pixels repeat to whole blocks).
    assert psnr(crop, out) >= 20


def test_greyscale_round_trip(ae_weights):
    grey = np.asarray(Image.fromarray(SMALL).convert("L"))
    data = dcomp.compress(grey, "cnn-ae", 6)
    out = dcomp.decompress(data)
    assert dcomp.info(data)["mode"] == "L"
    assert out.shape == grey.shape == (21, 33) and out.dtype == np.uint8
    assert psnr(grey, out) >= 20
    # A PIL image in mode L is the same input as its array.
    assert dcomp.compress(Image.fromarray(grey), "cnn-ae", 6) == data


def test_rgba_keeps_alpha_exactly(ae_weights):
    h, w = SMALL.shape[:2]
    rng = np.random.default_rng(5)
    ramp = (np.arange(w)[None, :] * 255 // (w - 1) + np.zeros((h, 1), int)).astype(np.uint8)
    mask = np.where(rng.random((h, w)) < 0.5, 0, 255).astype(np.uint8)
    for alpha in (ramp, mask):
        rgba = np.concatenate([SMALL, alpha[:, :, None]], axis=2)
        data = dcomp.compress(rgba, "cnn-ae", 6)
        out = dcomp.decompress(data)
        assert dcomp.info(data)["mode"] == "RGBA" and len(dcomp.info(data)["sections"]) == 2
        assert out.shape == (h, w, 4) and out.dtype == np.uint8
        assert np.array_equal(out[:, :, 3], alpha)
        assert psnr(SMALL, out[:, :, :3]) >= 20


# ---------------------------------------------------------------- tiles

def test_tiles_meet_without_seams(ae_weights, monkeypatch):
    # 160x192 pixels of real content (the 48x64 crop mirrored at its borders): a 20x24 latent
    # grid, one piece untiled, 5x6 tiles of 4x4 positions (each with its 6-position halo)
    # with TILE = 4.
    image = np.pad(PHOTO, ((0, 112), (0, 128), (0, 0)), mode="reflect")
    assert image.shape == (160, 192, 3)
    codec = registry.get("cnn-ae")
    pieces = []
    real_tiled = cnn_ae.tiled

    def counting_tiled(fn, *args):
        def counted(x):
            pieces.append(tuple(x.shape[2:]))
            return fn(x)
        return real_tiled(counted, *args)

    monkeypatch.setattr(cnn_ae, "tiled", counting_tiled)
    y_whole = codec.latents(image, 4)
    data_whole = dcomp.compress(image, "cnn-ae", 4)
    out_whole = dcomp.decompress(data_whole)
    assert pieces == [(160, 192), (160, 192), (20, 24)]  # latents, compress, decompress: whole

    monkeypatch.setattr(lossy, "TILE", 4)
    assert cnn_ae.HALO == 6
    pieces.clear()
    out_tiled = dcomp.decompress(data_whole)
    assert len(pieces) == 30 and min(pieces) == (10, 10)  # a corner tile: 4 + 6 positions a side
    diff = np.abs(out_tiled.astype(int) - out_whole)
    assert diff.max() <= 1
    # At most float noise: a halo one or two positions short of the receptive field already
    # changes 1e-3..1e-2 of the values.
    assert (diff > 0).mean() < 1e-4
    assert abs(psnr(image, out_tiled) - psnr(image, out_whole)) <= 0.1

    y_tiled = codec.latents(image, 4)
    assert np.abs(y_tiled - y_whole).max() <= 1
    assert (y_tiled != y_whole).mean() < 0.001  # only float rounding may flip a value sitting on .5
    pieces.clear()
    out_both = dcomp.decompress(dcomp.compress(image, "cnn-ae", 4))
    assert len(pieces) == 60
    assert out_both.shape == image.shape
    assert abs(psnr(image, out_both) - psnr(image, out_whole)) <= 0.1


# ---------------------------------------------------------------- corrupted files

def test_flipped_byte_anywhere_after_header_is_corrupt(ladder):
    data = ladder[4][0]
    start = dcomp.info(data)["header_bytes"]
    for pos in range(start, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        with pytest.raises(CorruptFileError):
            dcomp.decompress(bytes(bad))


def test_corrupted_latent_payload_through_decode_latents(ladder):
    data = ladder[4][0]
    payload = container.parse(data).sections[0]
    weights = registry.get("cnn-ae").weights
    grid = (6, 8)  # 48x64 pixels
    y = decode_latents(weights, payload, 3, *grid)
    assert np.array_equal(decode_latents(weights, payload, 3, *grid), y)
    escapes, words = split_payload(payload)
    assert len(words) % 4 == 0 and len(words) >= 4
    for cut in (1, 2, 3, 5):  # the ANS words cut to a length that is not whole words
        with pytest.raises(CorruptFileError, match="bad length"):
            decode_latents(weights, payload[:-cut], 3, *grid)
    # A stream never ends in a zero word: an appended zero word is refused before decoding.
    with pytest.raises(CorruptFileError):
        decode_latents(weights, payload + bytes(4), 3, *grid)
    # More escapes claimed than the whole grid holds values.
    too_many = LATENT * grid[0] * grid[1] + 1
    with pytest.raises(CorruptFileError, match="bad length"):
        decode_latents(weights, join_payload(escapes, bytes(too_many) + words, too_many), 3, *grid)
    with pytest.raises(CorruptFileError):
        decode_latents(weights, b"", 3, *grid)
    # The same truncation inside a well-framed file: the method's check, not the CRC, fires.
    with pytest.raises(CorruptFileError, match="latent stream"):
        dcomp.decompress(with_sections(data, [payload[:-1]]))


def test_escape_list_must_match_the_stream(extreme):
    _, _, weights = extreme
    rng = np.random.default_rng(11)
    y = rng.integers(-50, 51, (LATENT, 2, 3))
    payload = encode_latents(weights, y, 0)  # support 1: nearly every value escapes
    escapes, words = split_payload(payload)
    assert len(escapes) > 100
    assert np.array_equal(decode_latents(weights, payload, 0, 2, 3), y)
    # One escape more than the stream uses: left over.
    with pytest.raises(CorruptFileError, match="data left over"):
        decode_latents(weights, join_payload(escapes + [write_varint(6)], words), 0, 2, 3)
    # One escape fewer: the stream runs out of them.
    with pytest.raises(CorruptFileError, match="missing escapes"):
        decode_latents(weights, join_payload(escapes[:-1], words), 0, 2, 3)
    # A count claiming one more than the bytes hold: the first ANS bytes are read as an escape.
    with pytest.raises(CorruptFileError):
        decode_latents(weights, join_payload(escapes, words, len(escapes) + 1), 0, 2, 3)


def test_appended_words_are_left_over(extreme):
    """rANS has no end marker, so extra data is caught only when decoding stops before
    reaching it ('data left over'); a stream that decodes past its end reads as garbage.
    With realistic tables most appended words are caught; none may crash the decoder."""
    _, _, weights = extreme
    rng = np.random.default_rng(12)
    y = np.rint(rng.laplace(0, 1.5, (LATENT, 6, 8))).astype(np.int64)
    payload = encode_latents(weights, y, 5)  # quality index 5: the initial tables
    assert np.array_equal(decode_latents(weights, payload, 5, 6, 8), y)
    caught = 0
    for word in rng.integers(1, 2 ** 32, 32, dtype=np.uint64):
        try:
            out = decode_latents(weights, payload + int(word).to_bytes(4, "little"), 5, 6, 8)
        except CorruptFileError:  # left over, or garbage that needs escapes the list lacks
            caught += 1
        else:
            assert out.shape == y.shape and not np.array_equal(out, y)
    assert caught >= 16, caught


def test_corrupt_file_through_cli(ladder, weights_copy, run_cli, tmp_path):
    data = ladder[4][0]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    payload = container.parse(data).sections[0]
    cases = {"flipped.dcz": (bytes(flipped), "CRC"),
             "cut.dcz": (with_sections(data, [payload[:-1]]), "latent stream")}
    written = []
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        written.append(name)
        proc = run_cli("decompress", name, "-o", "out.png", env={"DCOMP_WEIGHTS_DIR": str(weights_copy)})
        line = assert_one_error_line(proc, 1)
        assert words in line, line
        # Neither out.png nor a half-written temporary file is left behind.
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)


def test_wrong_section_count_or_quality_is_corrupt(ladder):
    data = ladder[4][0]
    payload = container.parse(data).sections[0]
    with pytest.raises(CorruptFileError, match="section"):
        dcomp.decompress(with_sections(data, [payload, b"extra"]))
    with pytest.raises(CorruptFileError, match="section"):
        dcomp.decompress(with_sections(data, []))
    header = container.parse(data).header
    for quality in (0, 9, 15):
        header.quality = quality
        bad = container.Container(header, [payload]).to_bytes()
        with pytest.raises(CorruptFileError, match="quality"):
            dcomp.decompress(bad)


# ---------------------------------------------------------------- entropy coder

@pytest.mark.parametrize("scales", [(1e-3, 1e-3), (0.05, 50.0), (900.0, 900.0), (1e-3, 900.0)])
@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_integer_table_is_valid(scales, weight):
    table = laplace.integer_table(scales, weight)
    assert table.dtype == np.uint32
    assert int(table.astype(np.int64).sum()) == 1 << laplace.PRECISION
    assert table.min() >= 1
    assert len(table) % 2 == 0
    support = (len(table) - 2) // 2
    assert 1 <= support <= laplace.MAX_SUPPORT
    assert support == laplace.support_for(scales, weight)
    centre = int(table[support])  # value 0 is the most probable value
    assert centre == table[:-1].max()


def _tables_are_valid(freq: np.ndarray, offsets: np.ndarray) -> None:
    lengths = np.diff(offsets)
    assert len(offsets) == cnn_ae.QUALITIES * LATENT * cnn_ae.BINS + 1
    assert offsets[0] == 0 and offsets[-1] == len(freq)
    assert (lengths % 2 == 0).all() and lengths.min() >= 4
    assert ((lengths - 2) // 2 <= laplace.MAX_SUPPORT).all()
    assert freq.min() >= 1
    sums = np.add.reduceat(freq.astype(np.int64), offsets[:-1])
    assert (sums == 1 << laplace.PRECISION).all()


def test_installed_tables_are_valid(ae_weights):
    weights = registry.get("cnn-ae").weights
    _tables_are_valid(*tables(weights))


def test_extreme_tables_are_valid(extreme):
    _, _, weights = extreme
    _tables_are_valid(*tables(weights))
    supports = (np.diff(tables(weights)[1]) - 2) // 2
    per_quality = supports.reshape(cnn_ae.QUALITIES, -1)
    assert (per_quality[0] == 1).all()
    assert (per_quality[1] == laplace.MAX_SUPPORT).all()


def latent_cases(rng, h, w):
    """Named latent arrays (192, h, w) from hard distributions for the coder."""
    shape = (LATENT, h, w)
    spike = np.zeros(shape, np.int64)
    spike[rng.integers(LATENT), rng.integers(h), rng.integers(w)] = -4321
    dc_spike = np.zeros(shape, np.int64)
    dc_spike[64, h - 1, w - 1] = 2 ** 31  # a DC value past int32, as its own residual
    return {
        "wide": rng.integers(-5000, 5001, shape),
        "zeros": np.zeros(shape, np.int64),
        "spike": spike,
        "dc_spike": dc_spike,
        "laplace": np.rint(rng.laplace(0, 3, shape)).astype(np.int64),
        "heavy": np.rint(rng.standard_cauchy(shape) * 4).clip(-10 ** 6, 10 ** 6).astype(np.int64),
    }


@pytest.mark.parametrize("q", [0, 1, 2, 3, 5])
def test_latents_round_trip_exactly_under_extreme_tables(extreme, q):
    _, _, weights = extreme
    rng = np.random.default_rng(100 + q)
    for h, w in [(1, 1), (3, 17), (6, 5)]:
        for name, y in latent_cases(rng, h, w).items():
            payload = encode_latents(weights, y, q)
            out = decode_latents(weights, payload, q, h, w)
            assert out.dtype == np.int64 and out.shape == y.shape
            assert np.array_equal(out, y), (name, h, w)


def test_stream_length_bound_is_exact(extreme):
    """SPEC.md, Length bound: N words are refused for h*w blocks exactly when
    h * w * S_q > 2**24 * (32 N + 64); the check comes before any decoding."""
    _, _, weights = extreme
    q, h, w = 1, 5, 8  # quality index 1: the widest tables, about 192 bits a block at the least
    cost = h * w * weights.entropy.position_cost[q]
    words = -(-(cost - (64 << 24)) // (32 << 24))  # the fewest that pass
    assert words > 100
    short = write_varint(0) + b"\xff" * (4 * (words - 1))
    with pytest.raises(CorruptFileError, match="too short for 5x8 blocks"):
        decode_latents(weights, short, q, h, w)
    try:  # random words decode to something or fail later, but not on the length bound
        decode_latents(weights, write_varint(0) + b"\xff" * (4 * words), q, h, w)
    except CorruptFileError as exc:
        assert "too short" not in str(exc)


def test_every_encoded_stream_meets_the_length_bound(extreme):
    """Streams the encoder writes pass with room to spare, whatever the latents (the round-trip
    tests would also fail otherwise): here, the smallest N that still passes is far below."""
    _, _, weights = extreme
    rng = np.random.default_rng(21)
    for q in (0, 1, 2, 3, 5):
        for name, y in latent_cases(rng, 4, 6).items():
            payload = encode_latents(weights, y, q)
            n_words = len(split_payload(payload)[1]) // 4
            assert not weights.entropy.too_short(q, 24, n_words), (q, name)


def test_encoder_refuses_latents_whose_stream_is_too_short(extreme):
    """All latents at -K (symbol 0 of every table) cost nothing in an empty ANS coder: the
    stream would have no words, which the reader refuses for any grid, so it is never written."""
    _, _, weights = extreme
    k = laplace.MAX_SUPPORT  # quality index 1: every table spans -1023..1023
    y = np.full((LATENT, 2, 3), -k, np.int64)
    dc = list(cnn_ae.DC_CHANNELS)
    y[dc] = dc_from_residual(y[dc])  # DC residuals -K too
    with pytest.raises(UnsupportedError, match="shorter than the format allows"):
        encode_latents(weights, y, 1)
    with pytest.raises(CorruptFileError, match="too short"):
        decode_latents(weights, write_varint(0), 1, 2, 3)


def test_rgba_alpha_is_checked_before_the_synthesis(ae_weights, monkeypatch):
    """Inconsistent entropy data fails before the costly synthesis network runs."""
    data = dcomp.compress(np.concatenate([PHOTO, PHOTO[:, :, :1]], axis=2), "cnn-ae", 4)
    latents, alpha = container.parse(data).sections
    codec = registry.get("cnn-ae")
    monkeypatch.setattr(codec.weights, "net", lambda device: pytest.fail("synthesis ran"))
    with pytest.raises(CorruptFileError, match="lossless plane"):
        dcomp.decompress(with_sections(data, [latents, alpha[:-1]]))


def test_tables_are_deterministic(extreme, tmp_path):
    rng = np.random.default_rng(3)
    log_scales = rng.uniform(LOG_TINY, math.log(900.0), (40, 2))
    mix = rng.uniform(-30, 30, 40)
    first, second = laplace.build_tables(log_scales, mix), laplace.build_tables(log_scales.copy(), mix.copy())
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    # Exporting the same model again gives the same integer tables.
    model, folder, weights = extreme
    cnn_ae.save_weights(model, tmp_path / "again.npz", "cnn-ae")
    again = cnn_ae.Weights(tmp_path / "again.npz")
    assert all(np.array_equal(a, b) for a, b in zip(tables(again), tables(weights)))


# ---------------------------------------------------------------- context model

def sparse_latents(rng, shape):
    """Mostly zeros, small values at a density that varies from block to block, a few
    medium and huge ones: the activities fill every bin, 0 and the cap included."""
    density = 10.0 ** rng.uniform(-4, -0.3, shape[:-3] + (1,) + shape[-2:])
    y = np.where(rng.random(shape) < density, rng.integers(-3, 4, shape), 0)
    y = np.where(rng.random(shape) < 0.002, rng.integers(-300, 301, shape), y)
    return np.where(rng.random(shape) < 0.002, rng.integers(-2 ** 30, 2 ** 30, shape), y).astype(np.int64)


def bins_from_spec(y: np.ndarray) -> list[np.ndarray]:
    """The bins of formats/SPEC.md, written out with loops (one image, (192, h, w))."""
    _, h, w = y.shape
    groups = cnn_ae.channel_groups()
    dc = [0, 64, 128]
    d = np.zeros((h, w), dtype=object)
    for i in range(h):
        for j in range(w):
            for c in dc:
                if j + 1 < w:
                    d[i, j] += abs(int(y[c, i, j + 1]) - int(y[c, i, j]))
                if i + 1 < h:
                    d[i, j] += abs(int(y[c, i + 1, j]) - int(y[c, i, j]))
    out = [np.zeros((h, w), np.int64)]
    for g in range(1, len(groups)):
        ac = [c for grp in groups[1:g] for c in grp if c not in dc]
        s = d + np.abs(y[ac].astype(object)).sum(axis=0) if ac else d
        bins = np.zeros((h, w), np.int64)
        for i in range(h):
            for j in range(w):
                a = sum(s[ii, jj] for ii in range(i - 1, i + 2) for jj in range(j - 1, j + 2)
                        if 0 <= ii < h and 0 <= jj < w)
                bins[i, j] = sum(1 for k in range(11) if a >= 2 ** k)
        out.append(bins)
    return out


def test_context_bins_follow_the_spec():
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (1, 6), (4, 5)]:
        y = sparse_latents(rng, (LATENT, *shape))
        for got, want in zip(list(group_bins(cnn_ae.LAYOUT, y)), bins_from_spec(y)):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_context_bins_torch_equal_numpy(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(8)
    groups = cnn_ae.channel_groups()
    seen = set()
    for shape in [(1, 1, 1), (1, 1, 13), (3, 7, 9), (2, 16, 11)]:
        n, h, w = shape
        y = sparse_latents(rng, (n, LATENT, h, w))
        want = list(group_bins(cnn_ae.LAYOUT, y))
        got = cnn_ae.build_model().entropy.channel_bins(torch.from_numpy(y).to(device)).cpu().numpy()
        assert got.shape == y.shape
        for g, group in enumerate(groups):
            assert np.array_equal(got[:, group], np.broadcast_to(want[g][:, None], got[:, group].shape)), (shape, g)
            seen.update(np.unique(want[g]).tolist())
    assert seen == set(range(cnn_ae.BINS))  # every bin was exercised, the cap included


def test_dc_residual_inverts_and_follows_the_spec():
    rng = np.random.default_rng(9)
    for shape in [(3, 1, 1), (3, 1, 9), (3, 9, 1), (3, 5, 7), (4, 3, 6, 2)]:
        y = rng.integers(-10 ** 6, 10 ** 6, shape)
        r = dc_residual(y)
        assert np.array_equal(dc_from_residual(r), y)
        h, w = shape[-2:]
        want = np.empty_like(y)
        for i in range(h):
            for j in range(w):
                prev = y[..., i, j - 1] if j else (y[..., i - 1, 0] if i else 0)
                want[..., i, j] = y[..., i, j] - prev
        assert np.array_equal(r, want)


# ---------------------------------------------------------------- determinism and ids

def test_compression_is_deterministic(ladder, monkeypatch):
    data = dcomp.compress(PHOTO, "cnn-ae", 4)
    assert data == dcomp.compress(PHOTO, "cnn-ae", 4) == ladder[4][0]
    monkeypatch.setattr(registry, "_cache", {})  # weights loaded afresh
    assert dcomp.compress(PHOTO, "cnn-ae", 4) == data
    assert np.array_equal(dcomp.decompress(data), ladder[4][1])


def test_other_weights_are_refused(ladder, extreme, monkeypatch, tmp_path):
    data = ladder[4][0]
    _, folder, _ = extreme
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(folder))
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(WeightsError, match="other cnn-ae weights"):
        dcomp.decompress(data)
    mine = dcomp.compress(SMALL, "cnn-ae", 5)
    assert dcomp.info(mine)["model_id"] != dcomp.info(data)["model_id"]
    assert dcomp.decompress(mine).shape == SMALL.shape
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))  # no weights at all
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(WeightsError, match="not found"):
        dcomp.decompress(data)
    with pytest.raises(WeightsError, match="not found"):
        dcomp.compress(SMALL, "cnn-ae", 5)


# ---------------------------------------------------------------- refinement (cnn-ae-ft)

def test_refinement_never_raises_rate_distortion_cost(ae_weights, monkeypatch, tmp_path):
    """cnn-ae-ft's encoder on the cnn-ae network: the decoder is the same, so any change is the
    refinement's. It keeps the best rounding it meets, plain rounding included, so the cost
    may stay but must not rise (beyond the gap between estimated and coded bits)."""
    shutil.copyfile(ae_weights / "cnn-ae.npz", tmp_path / "cnn-ae.npz")
    shutil.copyfile(ae_weights / "cnn-ae.npz", tmp_path / "cnn-ae-ft.npz")
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "_cache", {})
    calls = []
    real_refine = cnn_ae.refine_latents

    def counting_refine(*args, **kwargs):
        calls.append(args[3])
        return real_refine(*args, **kwargs)

    monkeypatch.setattr(cnn_ae, "refine_latents", counting_refine)
    crop = np.ascontiguousarray(PHOTO[:32, :40])
    for q in (2, 5, 8):
        plain = rd_cost(dcomp.compress(crop, "cnn-ae", q), crop, q)
        assert calls == []  # cnn-ae never refines
        data = dcomp.compress(crop, "cnn-ae-ft", q)
        assert calls == [q - 1]
        calls.clear()
        assert dcomp.info(data)["method"] == "cnn-ae-ft"
        refined = rd_cost(data, crop, q)
        assert refined <= plain * 1.01 + 0.005, (q, refined, plain)


@pytest.mark.slow
def test_fine_tuned_beats_base_model(ae_weights):
    if not (ae_weights / "cnn-ae-ft.npz").is_file():
        pytest.skip("no cnn-ae-ft weights installed")
    for q in (2, 5, 8):
        base = rd_cost(dcomp.compress(PHOTO, "cnn-ae", q), PHOTO, q)
        tuned = rd_cost(dcomp.compress(PHOTO, "cnn-ae-ft", q), PHOTO, q)
        assert tuned < base, (q, tuned, base)


# ---------------------------------------------------------------- CLI rate control

def test_cli_bpp_target_and_usage_errors(ae_weights, run_cli, tmp_path):
    Image.fromarray(PHOTO).save(tmp_path / "photo.png")
    env = {"DCOMP_WEIGHTS_DIR": str(ae_weights)}
    proc = run_cli("compress", "photo.png", "-m", "cnn-ae", "--bpp", "2", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["bpp"] <= 2 and 1 <= record["quality"] <= 8
    data = (tmp_path / "photo.dcz").read_bytes()
    assert dcomp.info(data)["quality"] == record["quality"]
    for args, words in ((("-q", "3", "--bpp", "1"), "one of"), (("--psnr", "-1"), "positive"),
                        (("-q", "9"), "1..8")):
        proc = run_cli("compress", "photo.png", "-m", "cnn-ae", "-o", "x.dcz", *args, env=env)
        assert words in assert_one_error_line(proc, 2)
    proc = run_cli("compress", "photo.png", "-m", "mlp", "--bpp", "1", "-o", "y.dcz", env=env)
    assert "lossless" in assert_one_error_line(proc, 2)
    assert not (tmp_path / "x.dcz").exists() and not (tmp_path / "y.dcz").exists()
