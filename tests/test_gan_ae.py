"""`gan-ae` and `gan-ae-dc`: cnn-ae-ft's bits, their own decoders.

They share cnn-ae-ft's encoder and entropy model, so a file of any of the three decodes with
any of them; the decoders' weights hold only the decoder and name the cnn-ae-ft weights they
were trained for.

Most tests here are about that mechanism, and run on stand-in decoders made from the
installed cnn-ae-ft weights (their post filter perturbed), so they hold whatever GAN weights
are installed. The tests of the installed GAN decoders themselves skip while those were
trained for other cnn-ae-ft weights (after a change of backbone, until they are retrained)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import dcomp
from dcomp import container, registry
from dcomp import weights as W
from dcomp.errors import UnsupportedError, WeightsError
from dcomp.train import gan_ae as T

from conftest import assert_one_error_line, load_fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread

PHOTO = load_fixture("kodim03_64x48.png")
GAN_METHODS = ("gan-ae", "gan-ae-dc")




@pytest.fixture
def weights_copy(tmp_path, monkeypatch, fresh_registry):
    """Every method's installed weights, without the critics, in a private folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for _, _, _, name in registry.METHODS.values():
        if not (registry.weights_dir() / name).is_file():
            pytest.skip(f"no {name} installed")
        shutil.copy(registry.weights_dir() / name, folder / name)
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def installed_decoders(weights_copy):
    """The installed GAN decoders, if they were trained for the installed cnn-ae-ft weights."""
    bitstream = W.load(weights_copy / "cnn-ae-ft.npz").model_id.hex()
    for method in GAN_METHODS:
        trained_for = W.load(weights_copy / f"{method}.npz").meta.get("bitstream_model_id")
        if trained_for != bitstream:
            pytest.skip(f"installed {method} weights were trained for other cnn-ae-ft weights "
                        f"({trained_for}, installed {bitstream}): retrain them")
    return weights_copy


@pytest.fixture
def stand_ins(weights_copy):
    """In the copy, GAN decoders made from the installed cnn-ae-ft network with its post filter
    perturbed: decoders of the installed bitstream that decode differently."""
    import torch
    from dcomp.methods import cnn_ae

    file = W.load(weights_copy / "cnn-ae-ft.npz")
    for seed, method in enumerate(GAN_METHODS):
        net = cnn_ae.build_model(file)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            for p in net.post.parameters():
                p += 0.01 * torch.randn_like(p)
        T.save_decoder(net, weights_copy / f"{method}.npz",
                       {"method": method, "base_method": "cnn-ae-ft", "bitstream_model_id": file.model_id.hex()})
    return weights_copy


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


@pytest.mark.parametrize("method", GAN_METHODS)
def test_same_bits_as_cnn_ae_ft_except_the_method_id(stand_ins, method):
    ours, theirs = dcomp.compress(PHOTO, method, 2), dcomp.compress(PHOTO, "cnn-ae-ft", 2)
    a, b = container.parse(ours), container.parse(theirs)
    assert a.sections == b.sections and a.header.model_id == b.header.model_id
    assert (a.header.method_id, b.header.method_id) == (registry.METHODS[method][0], 3)


@pytest.mark.parametrize("method", GAN_METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (13, 7, 3), (21, 33, 1), (9, 10, 4)])
def test_round_trips(stand_ins, method, shape):
    rng = np.random.default_rng(1)
    image = PHOTO[:shape[0], :shape[1]]
    image = image.mean(axis=2, keepdims=True).astype(np.uint8) if shape[2] == 1 else image
    if shape[2] == 4:
        image = np.dstack([image, rng.integers(0, 256, shape[:2], dtype=np.uint8)])
    out = dcomp.decompress(dcomp.compress(image[:, :, 0] if shape[2] == 1 else image, method, 4))
    assert out.shape == (image.shape[:2] if shape[2] == 1 else image.shape)
    if shape[2] == 4:
        assert np.array_equal(out[:, :, 3], image[:, :, 3])  # alpha stays exact


def every_decoder_reads_every_file() -> None:
    for made_by in ("cnn-ae-ft", *GAN_METHODS):
        data = dcomp.compress(PHOTO, made_by, 1)
        decoded = {m: dcomp.decompress(data, decoder=m) for m in ("cnn-ae-ft", *GAN_METHODS)}
        assert np.array_equal(decoded[made_by], dcomp.decompress(data))  # the preferred decoder by default
        for m, image in decoded.items():
            assert psnr(image, PHOTO) > 20, (made_by, m)
        assert not np.array_equal(decoded["gan-ae"], decoded["cnn-ae-ft"])  # really another decoder


def test_every_decoder_reads_every_file(stand_ins):
    every_decoder_reads_every_file()


def test_installed_decoders_read_every_file(installed_decoders):
    every_decoder_reads_every_file()


def test_a_decoder_of_other_bits_is_refused(weights_copy):
    data = dcomp.compress(PHOTO, "cnn-ae", 3)
    with pytest.raises(UnsupportedError, match="cannot decode cnn-ae"):
        dcomp.decompress(data, decoder="gan-ae")
    with pytest.raises(UnsupportedError, match="cannot decode mlp"):
        dcomp.decompress(dcomp.compress(PHOTO[:8, :8]), decoder="gan-ae")


def test_decoder_weights_hold_only_the_decoder(installed_decoders):
    weights_copy = installed_decoders
    for method in GAN_METHODS:
        file = W.load(weights_copy / f"{method}.npz")
        assert file.params and all(T.is_decoder_parameter(k) for k in file.params)
        assert file.meta["bitstream_model_id"] == W.load(weights_copy / "cnn-ae-ft.npz").model_id.hex()
    assert not list(weights_copy.glob("*critic*"))  # and decoding above needed no critic


def test_decoder_trained_for_other_bits_is_refused(stand_ins, tmp_path):
    file = W.load(stand_ins / "gan-ae.npz")
    W.write_npz(stand_ins / "gan-ae.npz", file.params, {}, {**file.meta, "bitstream_model_id": "00000000"})
    with pytest.raises(WeightsError, match="trained for other cnn-ae-ft weights"):
        dcomp.compress(PHOTO, "gan-ae", 2)


@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_bad_decoder_weights_give_one_line(stand_ins, run_cli, tmp_path, damage):
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(PHOTO, "cnn-ae-ft", 2))
    path = stand_ins / "gan-ae.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        file = W.load(path)
        name = next(iter(file.params))
        W.write_npz(path, {**file.params, name: np.zeros((3, 3), np.float32)}, {}, file.meta)
    env = {"DCOMP_WEIGHTS_DIR": str(stand_ins)}
    line = assert_one_error_line(run_cli("decompress", "a.dcz", "--decoder", "gan-ae", "-o", "b.png", env=env), 1)
    assert "weights" in line and "gan-ae" in line
    assert not (tmp_path / "b.png").exists()


def test_cli_decoder_option(stand_ins, run_cli, tmp_path):
    (tmp_path / "a.dcz").write_bytes(dcomp.compress(PHOTO, "cnn-ae-ft", 1))
    env = {"DCOMP_WEIGHTS_DIR": str(stand_ins)}
    proc = run_cli("decompress", "a.dcz", "--decoder", "gan-ae-dc", "-o", "b.png", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert b'"decoder": "gan-ae-dc"' in proc.stdout
    line = assert_one_error_line(run_cli("decompress", "a.dcz", "--decoder", "nosuch", env=env), 2)
    assert "nosuch" in line
