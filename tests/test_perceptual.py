"""HaarPSI and the patch SWD (dcomp/perceptual.py): reference values, identities, and that
both fall with blur and with JPEG quality on the real fixture crops."""
import numpy as np
import pytest
from conftest import FIXTURE_NAMES, load_fixture

from dcomp import metrics, perceptual
from dcomp.perceptual import haarpsi, swd_patches

BT601_LUMA = np.array([0.299, 0.587, 0.114])


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (radius 3 sigma, mirrored edges), rounded back to uint8."""
    r = int(np.ceil(3 * sigma))
    taps = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        n = img.shape[axis]
        out = sum(t * np.take(padded, np.arange(k, k + n), axis=axis) for k, t in enumerate(taps))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _posterize(img: np.ndarray) -> np.ndarray:
    """Keep the top 4 bits of every sample, centred in its bin (16 levels)."""
    return (img & 0xF0) | 0x08


def _grey(img: np.ndarray) -> np.ndarray:
    return np.rint(img @ BT601_LUMA).astype(np.uint8)


def _noisy(img: np.ndarray, sd: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(img + rng.normal(0, sd, img.shape)), 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from dcomp.classical import get_codec

    codec = get_codec("jpeg")
    return codec.decode(codec.encode(img, quality), img.shape)


# ---------------------------------------------------------------- HaarPSI

# (fixture, distortion) -> HaarPSI from the authors' reference implementation: haarPsi.py of
# github.com/rgcda/haarpsi (commit 2c27931), haar_psi_numpy(reference, distorted) with its default
# subsampling, run with NumPy 2.4 and SciPy 1.17 on exactly the arrays the helpers above make.
DISTORTIONS = {"blur1": lambda a: _blur(a, 1.0), "poster": _posterize,
               "grey-blur1": lambda a: _blur(_grey(a), 1.0)}
REFERENCE_HAARPSI = {
    ("kodim03_64x48.png", "blur1"): 0.9163601535706575,
    ("kodim08_40x40.png", "blur1"): 0.8693355849695954,
    ("kodim23_33x21.png", "blur1"): 0.9582882132379195,
    ("kodim03_64x48.png", "poster"): 0.9577602816304936,
    ("kodim23_33x21.png", "poster"): 0.9812722517881068,
    ("kodim03_64x48.png", "grey-blur1"): 0.8822073939999378,
    ("kodim23_33x21.png", "grey-blur1"): 0.9405535726219264,
}
REFERENCE_TOLERANCE = 1e-12  # both are float64; the sums run in a different order


@pytest.mark.parametrize("case", sorted(REFERENCE_HAARPSI), ids=lambda c: f"{c[0][:7]}-{c[1]}")
def test_haarpsi_matches_the_reference_implementation(case) -> None:
    name, distortion = case
    ref = load_fixture(name)
    if distortion.startswith("grey"):
        ref = _grey(ref)
    dist = DISTORTIONS[distortion](load_fixture(name))
    assert haarpsi(ref, dist) == pytest.approx(REFERENCE_HAARPSI[case], abs=REFERENCE_TOLERANCE)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_identical_images_score_exactly_one_and_zero(name: str) -> None:
    img = load_fixture(name)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 200, np.uint8)], axis=2)
    for a in (img, _grey(img), _grey(img)[:, :, None], rgba, img.astype(np.float32)):
        assert haarpsi(a, a.copy()) == 1.0
        assert swd_patches(a, a.copy()) == 0.0


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_haarpsi_falls_with_blur(name: str) -> None:
    img = load_fixture(name)
    scores = [haarpsi(img, _blur(img, s)) for s in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert all(0 < s < 1 for s in scores)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_haarpsi_rises_with_jpeg_quality(name: str) -> None:
    img = load_fixture(name)
    scores = [haarpsi(img, _jpeg(img, q)) for q in (10, 30, 50, 70, 90)]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)


def test_haarpsi_is_symmetric_and_ignores_alpha() -> None:
    img = load_fixture("kodim03_64x48.png")
    blurred = _blur(img, 1.0)
    assert haarpsi(img, blurred) == pytest.approx(haarpsi(blurred, img), abs=1e-15)
    alpha = np.full(img.shape[:2] + (1,), 255, np.uint8)
    assert haarpsi(np.concatenate([img, alpha], 2), np.concatenate([blurred, 0 * alpha], 2)) == \
        haarpsi(img, blurred)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 5), (2, 3, 3), (5, 5), (9, 4, 3)])
def test_tiny_images_work(shape) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    assert 0 < haarpsi(a, b) < 1
    assert swd_patches(a, b) >= 0


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        haarpsi(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        swd_patches(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)))


# ---------------------------------------------------------------- patch SWD

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_swd_sees_blur_more_than_noise_of_the_same_psnr(name: str) -> None:
    img = load_fixture(name)
    for sigma in (0.7, 1.0, 1.5):
        blurred = _blur(img, sigma)
        noisy = _noisy(img, np.sqrt(np.mean((img.astype(float) - blurred) ** 2)))
        assert metrics.psnr(img, noisy) == pytest.approx(metrics.psnr(img, blurred), abs=0.15)
        assert swd_patches(img, blurred) > 1.3 * swd_patches(img, noisy) > 0


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_swd_grows_with_blur_and_falls_with_jpeg_quality(name: str) -> None:
    img = load_fixture(name)
    blurred = [swd_patches(img, _blur(img, s)) for s in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert blurred == sorted(blurred) and blurred[0] > 0
    jpeg = [swd_patches(img, _jpeg(img, q)) for q in (10, 30, 50, 70, 90)]
    assert jpeg == sorted(jpeg, reverse=True)


def test_swd_subsamples_large_images_deterministically() -> None:
    tile = load_fixture("kodim03_64x48.png")
    img = np.tile(tile, (4, 4, 1))[:150, :200]  # 144 * 194 positions, more than SWD_MAX_PATCHES
    assert (150 - 6) * (200 - 6) > perceptual.SWD_MAX_PATCHES
    blurred = _blur(img, 1.0)
    first = swd_patches(img, blurred)
    assert swd_patches(img, blurred) == first  # the same positions and directions in every call
    assert swd_patches(img, _blur(img, 2.0)) > first > swd_patches(img, _blur(img, 0.5)) > 0
