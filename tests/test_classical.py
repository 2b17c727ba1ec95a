import numpy as np
import pytest

from dcomp import classical
from dcomp.classical import CODECS, ClassicalCodec, available_codecs, get_codec

LOSSLESS = [n for n, c in CODECS.items() if c.lossless]
LOSSY = [n for n, c in CODECS.items() if not c.lossless]


def _image(channels: int | None) -> np.ndarray:
    """64x64 smooth gradients plus mild noise and an edge: photo-like enough for codecs to behave normally."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:64, 0:64].astype(float)
    base = [96 + 80 * np.sin(x / 9 + k) * np.cos(y / 13 - k) + 40 * (x > 40) for k in range(4)]
    img = np.stack(base, axis=2) + rng.normal(0, 4, (64, 64, 4))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels is None:
        return img[:, :, 0].copy()
    img = img[:, :, :channels].copy()
    if channels == 4:
        img[:8, :, 3] = 0  # fully transparent rows: codecs must not rewrite the colour under them
    return img


MODES = {"L-2d": None, "L": 1, "RGB": 3, "RGBA": 4}


def _codec(name: str) -> ClassicalCodec:
    codec = get_codec(name)
    if not codec.available():
        pytest.skip(f"{name}: {codec.unavailable_reason()}")
    return codec


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_roundtrip_is_exact(name, mode):
    codec = _codec(name)
    img = _image(MODES[mode])
    if classical.image_mode(img) not in codec.modes:
        with pytest.raises(ValueError, match=f"{name} does not support"):
            codec.encode(img, None)
        return
    data, out = codec.roundtrip(img)
    assert isinstance(data, bytes) and len(data) > 0
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_quality_and_size_follow_setting(name):
    codec = _codec(name)
    img = _image(3)
    low, high = codec.settings[0], codec.settings[-1]
    small = codec.encode(img, low)
    big = codec.encode(img, high)
    assert len(small) < len(big)
    out = codec.decode(big)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _psnr(img, out) > 35
    assert _psnr(img, codec.decode(small)) < _psnr(img, out)


@pytest.mark.parametrize("mode", ["L-2d", "L", "RGBA"])
@pytest.mark.parametrize("name", LOSSY)
def test_lossy_keeps_shape_for_other_modes(name, mode):
    codec = _codec(name)
    img = _image(MODES[mode])
    if classical.image_mode(img) not in codec.modes:
        with pytest.raises(ValueError, match=f"{name} does not support"):
            codec.encode(img, codec.settings[-1])
        return
    data, out = codec.roundtrip(img, codec.settings[-1])
    assert len(codec.encode(img, codec.settings[0])) < len(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    # lossy codecs may rightly discard the colour of fully transparent pixels
    visible = img[:, :, 3] > 0 if mode == "RGBA" else np.ones(img.shape[:2], bool)
    assert _psnr(img[visible], out[visible]) > 30


def test_opaque_alpha_dropped_by_codec_is_restored():
    codec = _codec("webp-lossless")
    img = _image(4)
    img[:, :, 3] = 255
    data, out = codec.roundtrip(img)
    assert codec.decode(data).shape[2] == 3  # libwebp stores no alpha when it is fully opaque
    np.testing.assert_array_equal(out, img)


def test_jpeg2000_lossy_hits_target_rate():
    codec = _codec("jpeg2000")
    img = _image(3)
    bpp = len(codec.encode(img, 1.0)) * 8 / (64 * 64)
    assert 0.8 < bpp <= 1.05


def test_bad_settings_and_inputs_raise_value_error():
    with pytest.raises(ValueError, match="needs a setting"):
        get_codec("jpeg").encode(_image(3))
    with pytest.raises(ValueError, match="takes no setting"):
        get_codec("png").encode(_image(3), 5)
    with pytest.raises(ValueError):
        get_codec("png").encode(_image(3).astype(np.uint16), None)
    with pytest.raises(ValueError):
        get_codec("png").encode(np.zeros((8, 8, 2), np.uint8), None)


def test_unknown_codec_raises_key_error():
    with pytest.raises(KeyError, match="no-such-codec"):
        get_codec("no-such-codec")
    with pytest.raises(KeyError):
        available_codecs(["png", "no-such-codec"])


def test_available_codecs_notes_missing_backends(monkeypatch):
    def broken():
        raise RuntimeError("library crashed")

    def fake(name, missing):
        return ClassicalCodec(name, True, [None], ("RGB",), None, None, missing)

    monkeypatch.setitem(CODECS, "gone", fake("gone", lambda: "not installed (imagecodecs lacks gone)"))
    monkeypatch.setitem(CODECS, "broken", fake("broken", broken))
    usable, notes = available_codecs(["gone", "broken"])
    assert usable == []
    assert notes[0] == "gone: not installed (imagecodecs lacks gone)"
    assert notes[1].startswith("broken: backend check failed")
    usable, notes = available_codecs()
    assert {c.name for c in usable} | {n.split(":")[0] for n in notes} == set(CODECS)


def test_registry_settings():
    for name, codec in CODECS.items():
        assert codec.name == name
        if codec.lossless:
            assert codec.settings == [None]
        else:
            assert len(codec.settings) > 1 and None not in codec.settings
