"""`cnn-rnn-ae`: one progressive file that decodes at any iteration prefix."""
from __future__ import annotations

import json

import numpy as np
import pytest

import dcomp
from dcomp import api, container, registry
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.methods.cnn_rnn_ae import ITERATIONS

from conftest import FIXTURES, assert_one_error_line, load_fixture

METHOD = "cnn-rnn-ae"
PHOTO = load_fixture("kodim03_64x48.png")


@pytest.fixture(scope="module")
def full_file() -> bytes:
    return dcomp.compress(PHOTO, METHOD, ITERATIONS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_every_prefix_decodes_as_the_file_compressed_at_that_many_iterations(full_file):
    for k in range(1, ITERATIONS + 1):
        direct = dcomp.compress(PHOTO, METHOD, k)
        assert full_file.startswith(direct), k  # the same bytes, header included
        assert np.array_equal(dcomp.decompress(full_file, iterations=k), dcomp.decompress(direct)), k
        assert api.truncate(full_file, iterations=k) == direct


@pytest.mark.parametrize("name", ["kodim03_64x48.png", "kodim08_40x40.png"])
def test_psnr_rises_with_the_iterations(name):
    image = load_fixture(name)
    data = dcomp.compress(image, METHOD, ITERATIONS)
    scores = [psnr(image, dcomp.decompress(data, iterations=k)) for k in range(1, ITERATIONS + 1)]
    assert all(b >= a - 0.05 for a, b in zip(scores, scores[1:])), scores  # never worse (within rounding)
    assert scores[-1] > scores[0] + 8 and scores[-1] > 30, scores


def test_a_file_cut_at_any_section_boundary_is_a_valid_file(full_file):
    parsed = container.parse(full_file)
    boundaries = [len(container.Container(parsed.header, parsed.sections[:k]).to_bytes())
                  for k in range(1, ITERATIONS + 1)]
    for k, end in enumerate(boundaries, 1):
        report = api.decompress_report(full_file[:end])
        assert report.quality == k
        assert np.array_equal(report.image, dcomp.decompress(full_file, iterations=k))


def test_a_file_cut_inside_a_section_is_an_error_naming_it(full_file):
    parsed = container.parse(full_file)
    end = len(container.Container(parsed.header, parsed.sections[:5]).to_bytes())
    for cut in (end + 1, end + 3, end + len(parsed.sections[5])):
        with pytest.raises(CorruptFileError, match="truncated in section 5"):
            dcomp.decompress(full_file[:cut])


def test_truncate_to_a_byte_budget_keeps_the_largest_prefix_that_fits(full_file):
    sizes = [len(api.truncate(full_file, iterations=k)) for k in range(1, ITERATIONS + 1)]
    for budget in sorted({sizes[0], sizes[0] + 1, *[s - 1 for s in sizes[1:]], *sizes, len(full_file) + 10}):
        cut = api.truncate(full_file, max_bytes=budget)
        assert len(cut) <= budget
        assert len(cut) == max(s for s in sizes if s <= budget)
        assert full_file.startswith(cut)
    with pytest.raises(UnsupportedError, match="first iteration alone"):
        api.truncate(full_file, max_bytes=sizes[0] - 1)


def test_info_lists_what_each_iteration_adds(full_file):
    fields = api.info(full_file)
    assert fields["iterations"] == fields["quality"] == ITERATIONS
    assert fields["header_bytes"] + sum(fields["iteration_bytes"]) == len(full_file)


@pytest.mark.parametrize("shape", [(1, 1, 3), (13, 7, 3), (21, 33, 1), (9, 10, 4)])
def test_round_trips_any_size_grey_and_rgba(shape):
    image = PHOTO[:shape[0], :shape[1]]
    if shape[2] == 1:
        image = image.mean(axis=2).astype(np.uint8)
    if shape[2] == 4:
        alpha = np.random.default_rng(1).integers(0, 256, shape[:2], dtype=np.uint8)
        image = np.dstack([image, alpha])
    data = dcomp.compress(image, METHOD, 6)
    out = dcomp.decompress(data)
    assert out.shape == image.shape
    if shape[2] == 4:
        assert np.array_equal(out[:, :, 3], image[:, :, 3])
        assert np.array_equal(dcomp.decompress(api.truncate(data, iterations=2))[:, :, 3], image[:, :, 3])


def test_large_images_are_tiled_without_seams():
    from dcomp.methods import lossy

    rng = np.random.default_rng(0)
    image = np.tile(PHOTO, (1, 18, 1))[:, :1100]  # wider than one tile of latents
    image = np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    data = dcomp.compress(image, METHOD, 5)
    tiled = dcomp.decompress(data)
    big = lossy.TILE
    try:
        lossy.TILE = 10 ** 6  # one tile
        registry._cache.clear()
        whole = dcomp.decompress(data)
        assert dcomp.compress(image, METHOD, 5) == data
    finally:
        lossy.TILE = big
        registry._cache.clear()
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_encoding_is_deterministic():
    assert dcomp.compress(PHOTO, METHOD, 9) == dcomp.compress(PHOTO, METHOD, 9)


def test_qualities_and_iterations_out_of_range_are_refused(full_file):
    with pytest.raises(UnsupportedError):
        dcomp.compress(PHOTO, METHOD, ITERATIONS + 1)
    with pytest.raises(UnsupportedError, match="1..16"):
        dcomp.decompress(full_file, iterations=ITERATIONS + 1)
    with pytest.raises(UnsupportedError, match="not progressive"):
        dcomp.decompress(dcomp.compress(PHOTO, "cnn-ae", 2), iterations=1)
    with pytest.raises(UnsupportedError, match="not progressive"):
        api.truncate(dcomp.compress(PHOTO, "mlp"), iterations=1)


def _recrc(data: bytes, section: int, payload: bytes) -> bytes:
    parsed = container.parse(data)
    parsed.sections[section] = payload
    return container.Container(parsed.header, parsed.sections).to_bytes()


def test_crafted_payloads_with_recomputed_crcs_are_errors(full_file):
    parsed = container.parse(full_file)
    k = max(range(ITERATIONS), key=lambda i: len(parsed.sections[i]))
    payload = bytearray(parsed.sections[k])
    payload[len(payload) // 2] ^= 0x10
    with pytest.raises(CorruptFileError, match=f"iteration {k + 1}"):
        dcomp.decompress(_recrc(full_file, k, bytes(payload)))
    with pytest.raises(CorruptFileError):
        dcomp.decompress(_recrc(full_file, k, parsed.sections[k][:-4]))  # one word short
    header = container.Header(**{**parsed.header.__dict__, "width": 4000, "height": 4000})
    with pytest.raises(CorruptFileError, match="too short"):  # a small file relabelled as a large image
        dcomp.decompress(container.Container(header, parsed.sections).to_bytes())
    header = container.Header(**{**parsed.header.__dict__, "quality": 3})
    with pytest.raises(CorruptFileError, match="quality"):
        dcomp.decompress(container.Container(header, parsed.sections).to_bytes())


def test_weights_without_a_schedule_or_priors_are_refused(tmp_path, monkeypatch, fresh_registry):
    import shutil

    folder = tmp_path / "w"
    folder.mkdir()
    for _, _, _, name in registry.METHODS.values():
        shutil.copy(registry.weights_dir() / name, folder / name)
    with np.load(folder / "cnn-rnn-ae.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["prior"] = arrays["prior"][:-1]
    np.savez(folder / "cnn-rnn-ae.npz", **arrays)
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError, match="priors"):
        dcomp.compress(PHOTO, METHOD, 2)


# ---------------------------------------------------------------- the command line

def test_cli_progressive_round_trip(run_cli, tmp_path):
    (tmp_path / "in.png").write_bytes((FIXTURES / "kodim08_40x40.png").read_bytes())
    assert run_cli("compress", "in.png", "-m", METHOD, "-q", "16", "-o", "f.dcz").returncode == 0
    proc = run_cli("truncate", "f.dcz", "--iterations", "5", "-o", "k5.dcz", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["iterations"] == 5
    assert run_cli("compress", "in.png", "-m", METHOD, "-q", "5", "-o", "q5.dcz").returncode == 0
    assert (tmp_path / "k5.dcz").read_bytes() == (tmp_path / "q5.dcz").read_bytes()
    budget = len((tmp_path / "q5.dcz").read_bytes())
    proc = run_cli("truncate", "-", "--bytes", str(budget), input=(tmp_path / "f.dcz").read_bytes())
    assert proc.returncode == 0 and proc.stdout == (tmp_path / "q5.dcz").read_bytes()
    proc = run_cli("decompress", "f.dcz", "--iterations", "5", "-o", "a.png", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["quality"] == 5
    assert run_cli("decompress", "q5.dcz", "-o", "b.png").returncode == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    info = json.loads(run_cli("info", "f.dcz", "--json").stdout)
    assert len(info["iteration_bytes"]) == 16


def test_cli_truncate_refuses_to_overwrite_and_needs_one_limit(run_cli, tmp_path):
    (tmp_path / "f.dcz").write_bytes(dcomp.compress(PHOTO, METHOD, 4))
    (tmp_path / "keep.dcz").write_bytes(b"precious")
    assert_one_error_line(run_cli("truncate", "f.dcz", "-k", "2", "-o", "keep.dcz"), 1)
    assert (tmp_path / "keep.dcz").read_bytes() == b"precious"
    assert_one_error_line(run_cli("truncate", "f.dcz", "-o", "x.dcz"), 2)
    assert_one_error_line(run_cli("truncate", "f.dcz", "-k", "2", "--bytes", "9", "-o", "x.dcz"), 2)
    assert_one_error_line(run_cli("truncate", "f.dcz", "-k", "9", "-o", "x.dcz"), 1)
    assert not (tmp_path / "x.dcz").exists()


@pytest.mark.parametrize("damage", ["inside-section", "flipped-bit-recrc"])
def test_cli_corrupted_and_truncated_files(run_cli, tmp_path, damage):
    data = dcomp.compress(PHOTO, METHOD, 8)
    parsed = container.parse(data)
    if damage == "inside-section":
        bad = data[:len(data) - 3]
    else:
        k = max(range(8), key=lambda i: len(parsed.sections[i]))
        payload = bytearray(parsed.sections[k])
        payload[-3] ^= 0x44
        bad = _recrc(data, k, bytes(payload))
        assert bad != data and len(bad) == len(data)
    (tmp_path / "bad.dcz").write_bytes(bad)
    line = assert_one_error_line(run_cli("decompress", "bad.dcz", "-o", "out.png"), 1)
    assert "bad.dcz" in line
    assert not (tmp_path / "out.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.dcz"]


def test_bits_bench_counts_every_decision(tmp_path):
    from dcomp.bench import progressive

    (tmp_path / "a.png").write_bytes((FIXTURES / "kodim03_64x48.png").read_bytes())
    result = progressive.run(tmp_path, log=lambda _: None)
    rows = result["iterations"]
    assert len(rows) == ITERATIONS and result["images"] == 1
    # the coded bits are the file's iteration sections: 2 check bytes and framing included
    assert result["coded_bpp_total"] * 64 * 48 == 8 * sum(api.info(dcomp.compress(PHOTO, METHOD, 16))["iteration_bytes"])
    assert result["raw_bpp_total"] > result["coded_bpp_total"] > 0
