"""Every trainer, two steps on the fixture crops: it runs, writes weights that load, a SHA-256
that matches and a learning curve, and --resume continues the curve."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcomp import registry
from dcomp import weights as W
from dcomp.methods import cnn_ae

from conftest import FIXTURES, load_fixture

PHOTO = load_fixture("kodim03_64x48.png")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in FIXTURES.glob("*.png"):
        shutil.copy(f, folder / f.name)
    return folder


def assert_published(out) -> dict:
    weights, sha_file, record_file = W.companions(out)
    assert sha_file.read_text().split()[0] == hashlib.sha256(weights.read_bytes()).hexdigest()
    return json.loads(record_file.read_text())


def test_mlp_trainer(photos, tmp_path):
    from dcomp.train.mlp import train

    out = tmp_path / "mlp.npz"
    train(photos, out, steps=2, log=lambda m: None)
    assert_published(out)
    from dcomp.methods.mlp import MlpCodec

    codec = MlpCodec("mlp", 1, out)
    assert len(codec.model_id()) == 4


@pytest.fixture
def large_photos(tmp_path):
    """The fixture crops mirrored out to 96x96: the wavelet trainers take crops of whole
    32-pixel low-pass samples, from the photos and their 0.6x copies, and validate on centre
    crops of the held-out photo, so every one must be at least 32 pixels a side."""
    folder = tmp_path / "large_photos"
    folder.mkdir()
    for f in FIXTURES.glob("*.png"):
        a = load_fixture(f.name)
        Image.fromarray(np.pad(a, ((0, 96 - a.shape[0]), (0, 96 - a.shape[1]), (0, 0)), mode="symmetric")).save(
            folder / f.name)
    return folder


@pytest.fixture
def small_table_fit(monkeypatch):
    """The trainer's table fits on two 32x32 crops, a few iterations: the smoke test's budget."""
    from dcomp.train import cnn_ae as T

    real = T.fit_tables
    monkeypatch.setattr(T, "TABLE_FIT_ITERATIONS", 4)
    monkeypatch.setattr(T, "fit_tables", lambda *args, **kwargs: real(*args, **{**kwargs, "crops": 2, "size": 32}))
    monkeypatch.setattr(T, "VAL_CROP", 64)


def test_cnn_ae_trainer(large_photos, tmp_path, small_table_fit):
    from dcomp.train.cnn_ae import train

    out = tmp_path / "cnn-ae.npz"
    # val_every=2: each validation also saves, and exporting the tables takes ~1 s here.
    kwargs = dict(crop=32, batch=2, val_every=2, threads=1, log=lambda m: None)
    record = train(large_photos, out, steps=2, **kwargs)
    assert assert_published(out) == record
    assert [p["step"] for p in record["curve"]] == [0, 2]
    assert all(np.isfinite(p[q][k]) for p in record["curve"] for q in ("q1", "q4", "q8") for k in ("bpp", "psnr"))
    assert np.isfinite(record["initial_table_fit_bpp"]) and np.isfinite(record["final_table_fit_bpp"])
    codec = cnn_ae.CnnAeCodec("cnn-ae", 2, out)
    y = codec.latents(codec.padded_rgb(PHOTO), 4)  # a list of bands: LL, then the details
    assert [b.shape for b in y] == codec.weights.entropy.layout.band_shapes(64, 64)
    decoded = codec.decompress_latents(codec.compress_latents(y, 4), 4, codec.grid(*PHOTO.shape[:2]))
    assert all(np.array_equal(a, b) for a, b in zip(decoded, y))
    again = train(large_photos, out, steps=1, resume=True, **kwargs)
    assert again["curve"][-1]["step"] == 3 and len(again["runs"]) == 2


def test_cnn_ae_trainer_refuses_photos_smaller_than_the_crop(photos, tmp_path, small_table_fit):
    from dcomp.train.cnn_ae import train

    with pytest.raises(ValueError, match="at least 128 pixels"):
        train(photos, tmp_path / "cnn-ae.npz", steps=1, crop=128, batch=2, threads=1, log=lambda m: None)


def test_table_fit_lowers_the_rate_of_rounded_coefficients():
    """fit_tables fits the entropy model alone to rounded coefficients: the model's bits of
    them fall, and nothing else of the network moves."""
    import torch
    from dcomp.train.cnn_ae import fit_tables
    from dcomp.train.data import to_tensor

    with torch.random.fork_rng():
        torch.manual_seed(0)  # the convolutions' random init
        model = cnn_ae.build_model()
    crops = [np.pad(a, ((0, max(0, 64 - a.shape[0])), (0, max(0, 64 - a.shape[1])), (0, 0)), mode="symmetric")
             for a in (load_fixture(f.name) for f in sorted(FIXTURES.glob("*.png")))]
    x = to_tensor(np.stack([c[:64, :64] for c in crops]))
    q = torch.tensor([0, 3, 7])

    def rate() -> float:
        with torch.no_grad():
            return float(model.code(model.analysis(x, q), q, rate_on="rounded")[1].sum())

    before, others = rate(), {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("entropy.")}
    bpp = fit_tables(model, crops, np.random.default_rng(0), 10, crops=4, size=64, log=lambda m: None)
    assert np.isfinite(bpp)
    assert rate() < 0.9 * before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in others.items())


@pytest.fixture
def cnn_ae_ft_init(tmp_path) -> Path:
    """An untrained network of this backbone saved as cnn-ae-ft weights: what a GAN decoder is
    fine-tuned from (independent of the installed weights)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cnn_ae.build_model()
    path = tmp_path / "init" / "cnn-ae-ft.npz"
    path.parent.mkdir()
    cnn_ae.save_weights(model, path, "cnn-ae-ft")
    return path


@pytest.mark.parametrize("method", ["gan-ae", "gan-ae-dc"])
def test_gan_trainer(large_photos, tmp_path, method, cnn_ae_ft_init, monkeypatch):
    from dcomp.train import gan_ae as T

    monkeypatch.setattr(T, "VAL_CROP", 64)
    out = tmp_path / f"{method}.npz"
    kwargs = dict(crop=32, batch=2, val_every=1, threads=1, log=lambda m: None)
    record = T.train(large_photos, out, method, cnn_ae_ft_init, steps=2, **kwargs)
    assert_published(out)
    assert [p["step"] for p in record["curve"]] == [0, 1, 2]
    assert "critic_loss" in record["curve"][-1] and len(record["curve"][-1]["beta"]) == cnn_ae.QUALITIES
    assert T.critic_path(out).exists()
    decoder = W.load(out)
    assert decoder.params and all(T.is_decoder_parameter(k) for k in decoder.params)  # no encoder, no critic
    assert decoder.meta["bitstream_model_id"] == W.load(cnn_ae_ft_init).model_id.hex()
    again = T.train(large_photos, out, method, cnn_ae_ft_init, steps=1, resume=True, **kwargs)
    assert again["curve"][-1]["step"] == 3


def test_cnn_rnn_ae_trainer(photos, tmp_path):
    from dcomp.methods.cnn_rnn_ae import ITERATIONS, CnnRnnAeCodec
    from dcomp.train import cnn_rnn_ae as T

    out = tmp_path / "cnn-rnn-ae.npz"
    # cnn-rnn-ae starts from the retired block backbone's transforms (Makefile: train-cnn-rnn-ae).
    kept = sorted((registry.weights_dir() / "legacy").glob("cnn-ae-ft.*.npz"))
    if not kept:
        pytest.skip("no block-backbone cnn-ae-ft weights in weights/legacy")
    init = kept[0]
    kwargs = dict(minutes=5, crop=16, batch=2, seed=0, threads=1, recurrent_hidden=8, extra=None, log=lambda m: None)
    record = T.train(photos, init, out, steps=2, resume=False, **kwargs)
    assert_published(out)
    planes = W.load(out).arrays["planes"]
    assert planes.shape == (ITERATIONS + 1, 192)
    assert record["steps"] == 2 and len(record["curve"][0]["val_psnr"]) == ITERATIONS
    codec = CnnRnnAeCodec("cnn-rnn-ae", 6, out)
    sections = codec.encode(PHOTO, 5)
    assert len(sections) == 5
    from dcomp.container import Header

    header = Header(6, codec.model_id(), PHOTO.shape[1], PHOTO.shape[0], "RGB", 0)
    assert codec.decode(header, sections).shape == PHOTO.shape
    again = T.train(photos, init, out, steps=3, resume=True, **kwargs)
    assert again["steps"] == 3 and [r["steps"] for r in again["runs"]] == [[0, 2], [2, 3]]
    assert np.array_equal(W.load(out).arrays["planes"], planes)  # the schedule is kept on resume
