"""The `cnn-ae` and `cnn-ae-ft` methods (learned lifting wavelet, subband context model):
round trips at every quality, rate and PSNR targets, odd sizes and modes, the post filter's
tiles, corrupted files, determinism and model ids, and cnn-ae-ft's rate-distortion optimized
quantization. The coefficient coder itself (contexts, extreme tables, length bound, tables
against the likelihood) is tested in test_subband_model.py, the transform in test_lifting.py.

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
from dcomp import weights as W
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.methods import cnn_ae, rdoq
from dcomp.varint import write_varint

from conftest import assert_one_error_line, load_fixture, split_payload

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread

PHOTO = load_fixture("kodim03_64x48.png")   # (48, 64, 3)
SMALL = load_fixture("kodim23_33x21.png")   # (21, 33, 3)
QUALITIES = range(1, cnn_ae.QUALITIES + 1)


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


def is_this_backbone(path) -> bool:
    return (W.load(path).meta.get("architecture") or {}).get("name") == cnn_ae.ARCHITECTURE


# ---------------------------------------------------------------- fixtures



@pytest.fixture(scope="module", autouse=True)
def weights_copy(tmp_path_factory):
    """DCOMP_WEIGHTS_DIR -> a private copy of the installed cnn-ae / cnn-ae-ft weights (no
    weights/legacy: a file of other weights is refused here), with a codec cache of its own
    shared by this module's tests (the weights load once)."""
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
    path = weights_copy / "cnn-ae.npz"
    if not path.is_file():
        pytest.skip("no cnn-ae weights installed")
    if not is_this_backbone(path):
        pytest.skip("the installed cnn-ae weights are not the wavelet backbone's")
    return weights_copy


@pytest.fixture(scope="module")
def ladder(ae_weights):
    """quality -> (file, decoded image) of the 64x48 crop."""
    out = {}
    for q in QUALITIES:
        data = dcomp.compress(PHOTO, "cnn-ae", q)
        out[q] = (data, dcomp.decompress(data))
    return out


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A folder with an untrained network (random convolutions) saved as cnn-ae.npz: weights
    of this backbone that are not the installed ones."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same file on every run
        model = cnn_ae.build_model()
    folder = tmp_path_factory.mktemp("other_weights")
    cnn_ae.save_weights(model, folder / "cnn-ae.npz", "cnn-ae")
    return folder


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


def test_latents_are_the_bands_of_the_padded_image(ladder):
    """One integer array per band, [LL, D_L, ..., D_1], shaped by the padded image."""
    codec = registry.get("cnn-ae")
    padded = codec.padded_rgb(PHOTO)
    assert padded.shape == (64, 64, 3)  # whole low-pass samples: multiples of 32
    y = codec.latents(padded, 4)
    assert [b.shape for b in y] == codec.weights.entropy.layout.band_shapes(64, 64)
    assert all(b.dtype == np.int64 for b in y)
    assert container.parse(ladder[4][0]).sections[0] == codec.compress_latents(y, 4)


def test_target_bpp_picks_highest_quality_within_budget(ladder):
    rates = {q: bpp(ladder[q][0], PHOTO) for q in QUALITIES}
    # Between two qualities, exactly on one (the bound is inclusive), and above them all.
    targets = [(rates[3] + rates[4]) / 2, rates[5], rates[8] * 2]
    for target in targets:
        data = dcomp.compress(PHOTO, "cnn-ae", target_bpp=target)
        q = dcomp.info(data)["quality"]
        assert bpp(data, PHOTO) <= target
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
        assert q == min(k for k in QUALITIES if quality_psnr[k] >= target)
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
    # At q8 the crop is recognisable, padding or not (edge pixels repeat to whole 32x32 blocks).
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


# ---------------------------------------------------------------- tiles of the post filter

@pytest.fixture
def counted_tiles(monkeypatch):
    """The sizes of the pieces the post filter runs on, through cnn_ae.tiled."""
    pieces = []
    real_tiled = cnn_ae.tiled

    def counting_tiled(fn, *args, **kwargs):
        def counted(x):
            pieces.append(tuple(x.shape[2:]))
            return fn(x)
        return real_tiled(counted, *args, **kwargs)

    monkeypatch.setattr(cnn_ae, "tiled", counting_tiled)
    return pieces


def test_post_filter_tiles_meet_without_seams(ae_weights, monkeypatch, counted_tiles):
    """The synthesis runs the full-resolution post filter in tiles with a halo: the result is
    the untiled one up to float noise. The post filter gets random weights first (an untrained
    one is the identity, whose tiles would meet whatever the halo)."""
    net = cnn_ae.build_model(W.load(ae_weights / "cnn-ae.npz"))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in net.post.parameters():
            p.normal_(0.0, 0.3)
    image = np.pad(PHOTO, ((0, 16), (0, 32), (0, 0)), mode="symmetric")  # 64x96
    q = torch.tensor([3])
    with torch.no_grad():
        y = [torch.round(b) for b in net.analysis(cnn_ae.image_tensor(image, "cpu"), q)]
        whole = net.synthesis(y, q, tile=True)
        assert counted_tiles == [(64, 96)]  # below POST_TILE: one piece
        monkeypatch.setattr(cnn_ae, "POST_TILE", 16)
        counted_tiles.clear()
        tiles = net.synthesis(y, q, tile=True)
        assert len(counted_tiles) == 4 * 6 and min(counted_tiles) == (20, 20)  # a corner: 16 + the halo of 4
        assert float((tiles - whole).abs().max()) < 1e-5
        assert float((net.synthesis(y, q) - whole).abs().max()) < 1e-5
        # The comparison sees seams: a halo narrower than the filter's reach (2) leaves them.
        monkeypatch.setattr(cnn_ae, "POST_HALO", 1)
        assert float((net.synthesis(y, q, tile=True) - whole).abs().max()) > 1e-3


def test_tiled_decoding_matches_untiled(ladder, monkeypatch, counted_tiles):
    """Through the codec: decoding in 16-pixel tiles gives the pixels of decoding whole."""
    data, whole = ladder[5]
    monkeypatch.setattr(cnn_ae, "POST_TILE", 16)
    tiled = dcomp.decompress(data)
    assert len(counted_tiles) == 4 * 4  # the padded 64x64 image
    diff = np.abs(tiled.astype(int) - whole)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # only float rounding may flip a pixel


# ---------------------------------------------------------------- corrupted files

def test_flipped_byte_anywhere_after_header_is_corrupt(ladder):
    data = ladder[4][0]
    start = dcomp.info(data)["header_bytes"]
    for pos in range(start, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        with pytest.raises(CorruptFileError):
            dcomp.decompress(bytes(bad))


def test_truncated_payload_is_corrupt(ladder):
    """A coefficient payload cut short inside a well-framed file: the method's checks fire,
    not the CRC."""
    data = ladder[4][0]
    payload = container.parse(data).sections[0]
    for cut in (1, 2, 3):
        with pytest.raises(CorruptFileError, match="coefficient stream"):
            dcomp.decompress(with_sections(data, [payload[:-cut]]))
    with pytest.raises(CorruptFileError, match="coefficient stream"):  # not even the escape count
        dcomp.decompress(with_sections(data, [b""]))


def test_escapes_and_words_must_match_the_stream(ladder):
    """A file whose escape list or words do not match what decoding uses is refused."""
    data = ladder[8][0]
    payload = container.parse(data).sections[0]
    escapes, words = split_payload(payload)
    extra_escape = write_varint(len(escapes) + 1) + b"".join(escapes) + write_varint(6) + words
    with pytest.raises(CorruptFileError, match="data left over"):
        dcomp.decompress(with_sections(data, [extra_escape]))
    with pytest.raises(CorruptFileError, match="coefficient stream"):  # a zero word appended
        dcomp.decompress(with_sections(data, [payload + bytes(4)]))
    caught = 0
    for word in np.random.default_rng(2).integers(1, 2 ** 32, 16, dtype=np.uint64):
        try:
            dcomp.decompress(with_sections(data, [payload + int(word).to_bytes(4, "little")]))
        except CorruptFileError:
            caught += 1
    assert caught >= 8, caught  # most appended words are left over (rANS has no end marker)


def test_corrupt_file_through_cli(ladder, weights_copy, run_cli, tmp_path):
    data = ladder[4][0]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    payload = container.parse(data).sections[0]
    cases = {"flipped.dcz": (bytes(flipped), "CRC"),
             "cut.dcz": (with_sections(data, [payload[:-1]]), "coefficient stream")}
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


def test_rgba_alpha_is_checked_before_the_synthesis(ae_weights, monkeypatch):
    """Inconsistent entropy data fails before the costly synthesis network runs."""
    data = dcomp.compress(np.concatenate([PHOTO, PHOTO[:, :, :1]], axis=2), "cnn-ae", 4)
    latents, alpha = container.parse(data).sections
    codec = registry.get("cnn-ae")
    monkeypatch.setattr(codec.weights, "net", lambda device: pytest.fail("synthesis ran"))
    with pytest.raises(CorruptFileError, match="lossless plane"):
        dcomp.decompress(with_sections(data, [latents, alpha[:-1]]))


# ---------------------------------------------------------------- determinism and ids

def test_compression_is_deterministic(ladder, monkeypatch):
    data = dcomp.compress(PHOTO, "cnn-ae", 4)
    assert data == dcomp.compress(PHOTO, "cnn-ae", 4) == ladder[4][0]
    monkeypatch.setattr(registry, "_cache", {})  # weights loaded afresh
    assert dcomp.compress(PHOTO, "cnn-ae", 4) == data
    assert np.array_equal(dcomp.decompress(data), ladder[4][1])


def test_other_weights_are_refused(ladder, other_weights, monkeypatch, tmp_path, run_cli):
    data = ladder[4][0]
    model_id = dcomp.info(data)["model_id"]
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(other_weights))
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(WeightsError, match=f"other cnn-ae weights \\(model id {model_id},.*none kept in weights/legacy"):
        dcomp.decompress(data)
    mine = dcomp.compress(SMALL, "cnn-ae", 5)
    assert dcomp.info(mine)["model_id"] != model_id
    assert dcomp.decompress(mine).shape == SMALL.shape
    (tmp_path / "a.dcz").write_bytes(data)
    line = assert_one_error_line(run_cli("decompress", "a.dcz", "-o", "a.png",
                                         env={"DCOMP_WEIGHTS_DIR": str(other_weights)}), 1)
    assert "other cnn-ae weights" in line and model_id in line
    assert not (tmp_path / "a.png").exists()
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))  # no weights at all
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(WeightsError, match="not found"):
        dcomp.decompress(data)
    with pytest.raises(WeightsError, match="not found"):
        dcomp.compress(SMALL, "cnn-ae", 5)


# ---------------------------------------------------------------- refinement (cnn-ae-ft)

@pytest.fixture
def same_network(ae_weights, monkeypatch, tmp_path):
    """cnn-ae-ft's encoder on the cnn-ae network: the decoder is the same, so any difference
    between the two methods' files is the refinement's. Counts the refinement's calls."""
    shutil.copyfile(ae_weights / "cnn-ae.npz", tmp_path / "cnn-ae.npz")
    shutil.copyfile(ae_weights / "cnn-ae.npz", tmp_path / "cnn-ae-ft.npz")
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "_cache", {})
    calls = []
    real_refine = rdoq.refine_quantization

    def counting_refine(net, v, q, lam):
        calls.append(q)
        return real_refine(net, v, q, lam)

    monkeypatch.setattr(rdoq, "refine_quantization", counting_refine)
    return calls


def test_refinement_never_raises_the_rate_distortion_cost(same_network):
    """Each move saves more estimated bits than it adds distortion, so the cost may stay but
    must not rise (beyond the gap between estimated and coded bits)."""
    crop = np.ascontiguousarray(PHOTO[:32, :40])
    for q in (2, 5, 8):
        plain = rd_cost(dcomp.compress(crop, "cnn-ae", q), crop, q)
        assert same_network == []  # cnn-ae never refines
        data = dcomp.compress(crop, "cnn-ae-ft", q)
        assert same_network == [q - 1]
        same_network.clear()
        assert dcomp.info(data)["method"] == "cnn-ae-ft"
        assert rd_cost(data, crop, q) <= plain * 1.01 + 0.005, q


def test_refinement_lowers_the_cost_of_a_photo(same_network):
    plain = refined = 0.0
    for q in (2, 5, 8):
        plain += rd_cost(dcomp.compress(PHOTO, "cnn-ae", q), PHOTO, q)
        refined += rd_cost(dcomp.compress(PHOTO, "cnn-ae-ft", q), PHOTO, q)
    assert refined < plain, (refined, plain)


def test_refinement_only_moves_details_one_step_toward_zero(ae_weights):
    net = cnn_ae.Weights(ae_weights / "cnn-ae.npz").net("cpu")  # with its integer tables
    q = 1
    with torch.no_grad():
        v = [b[0].double().numpy() for b in net.analysis(cnn_ae.image_tensor(PHOTO[:32], "cpu"), torch.tensor([q]))]
    rounded = [np.round(b).astype(np.int64) for b in v]
    refined = rdoq.refine_quantization(net, v, q, cnn_ae.LAMBDAS[q])
    assert np.array_equal(refined[0], rounded[0])  # the low-pass band is left alone
    moved = 0
    for r, y in zip(refined[1:], rounded[1:]):
        assert r.dtype == np.int64 and r.shape == y.shape
        changed = r != y
        assert np.array_equal(r[changed], y[changed] - np.sign(y[changed]))  # one step toward zero
        moved += int(changed.sum())
    assert moved > 0


@pytest.mark.slow
def test_fine_tuned_beats_base_model(ae_weights):
    if not (ae_weights / "cnn-ae-ft.npz").is_file() or not is_this_backbone(ae_weights / "cnn-ae-ft.npz"):
        pytest.skip("no cnn-ae-ft weights of this backbone installed")
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
