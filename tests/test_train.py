"""Every trainer, two steps on the fixture crops: it runs, writes weights that load, a SHA-256
that matches and a learning curve, and --resume continues the curve."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

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


def test_cnn_ae_trainer(photos, tmp_path):
    from dcomp.train.cnn_ae import train

    out = tmp_path / "cnn-ae.npz"
    train(photos, out, steps=2, crop=16, batch=2, val_every=1, log=lambda m: None)
    record = assert_published(out)
    assert [p["step"] for p in record["curve"]] == [0, 1, 2]
    codec = cnn_ae.CnnAeCodec("cnn-ae", 2, out)
    y = codec.latents(PHOTO, 4)
    assert np.array_equal(codec.decompress_latents(codec.compress_latents(y, 4), 4, y.shape[1:]), y)
    again = train(photos, out, steps=1, crop=16, batch=2, val_every=1, resume=True, log=lambda m: None)
    assert again["curve"][-1]["step"] == 3


@pytest.mark.parametrize("method", ["gan-ae", "gan-ae-dc"])
def test_gan_trainer(photos, tmp_path, method):
    from dcomp.train import gan_ae as T

    out = tmp_path / f"{method}.npz"
    init = registry.weights_dir() / "cnn-ae-ft.npz"
    record = T.train(photos, out, method, init, steps=2, crop=16, batch=2, val_every=1, log=lambda m: None)
    assert_published(out)
    assert [p["step"] for p in record["curve"]] == [0, 1, 2]
    assert "critic_loss" in record["curve"][-1] and len(record["curve"][-1]["beta"]) == cnn_ae.QUALITIES
    assert T.critic_path(out).exists()
    assert all(T.is_decoder_parameter(k) for k in W.load(out).params)  # no encoder, no critic
    again = T.train(photos, out, method, init, steps=1, crop=16, batch=2, val_every=1, resume=True,
                    log=lambda m: None)
    assert again["curve"][-1]["step"] == 3


def test_cnn_rnn_ae_trainer(photos, tmp_path):
    from dcomp.methods.cnn_rnn_ae import ITERATIONS, CnnRnnAeCodec
    from dcomp.train import cnn_rnn_ae as T

    out = tmp_path / "cnn-rnn-ae.npz"
    init = registry.weights_dir() / "cnn-ae-ft.npz"
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
