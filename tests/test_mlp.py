"""The `mlp` method through the public API: bit-exact round trips, size bounds, graphics,
determinism, and the integer network's fast path against its plain-Python definition.

No test depends on the weights' values or on exact file sizes: the weights get retrained."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

import dcomp
from dcomp import registry
from dcomp.errors import DcompError, UnsupportedError, WeightsError
from dcomp.methods import mlp_predictor as P

from conftest import FIXTURE_NAMES, load_fixture

FIXTURE_ARRAYS = {name: load_fixture(name) for name in FIXTURE_NAMES}
MODES = ("L", "RGB", "RGBA")
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def round_trip(image) -> tuple[bytes, np.ndarray]:
    data = dcomp.compress(image, method="mlp")
    return data, dcomp.decompress(data)


def assert_exact(image, expected: np.ndarray | None = None) -> bytes:
    data, out = round_trip(image)
    expected = np.asarray(image) if expected is None else expected
    assert out.dtype == np.uint8
    assert out.shape == expected.shape
    assert np.array_equal(out, expected)
    return data


# ---------------------------------------------------------------- image content

def make_content(kind: str, h: int, w: int, mode: str, seed: int) -> np.ndarray:
    """(H, W) for L, else (H, W, C) uint8."""
    rng = np.random.default_rng(seed)
    c = len(mode)
    if kind == "flat":
        arr = np.broadcast_to(rng.integers(0, 256, c, dtype=np.uint8), (h, w, c)).copy()
    elif kind == "noise":
        arr = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    elif kind == "gradient":
        y, x = np.mgrid[0:h, 0:w]
        a, b, off = rng.uniform(-12, 12, c), rng.uniform(-12, 12, c), rng.uniform(0, 255, c)
        arr = np.stack([np.mod(off[k] + a[k] * x + b[k] * y, 256) for k in range(c)], axis=2).astype(np.uint8)
    else:  # a random sub-crop of a real photo
        src = FIXTURE_ARRAYS[FIXTURE_NAMES[int(rng.integers(len(FIXTURE_NAMES)))]]
        h, w = min(h, src.shape[0]), min(w, src.shape[1])
        y0, x0 = rng.integers(0, src.shape[0] - h + 1), rng.integers(0, src.shape[1] - w + 1)
        rgb = src[y0:y0 + h, x0:x0 + w]
        if mode == "L":
            arr = np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
        elif mode == "RGB":
            arr = rgb
        else:  # alpha: opaque, a soft ramp, or a hard mask
            style = int(rng.integers(3))
            alpha = (np.full((h, w), 255) if style == 0 else
                     (np.arange(w)[None, :] * 255 // max(w - 1, 1) + np.zeros((h, 1), int)) if style == 1 else
                     np.where(rng.random((h, w)) < 0.5, 0, 255))
            arr = np.concatenate([rgb, alpha[:, :, None].astype(np.uint8)], axis=2)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return arr[:, :, 0] if mode == "L" else arr


SPECIAL_SIZES = [(1, 1), (1, 2), (2, 1), (1, 40), (40, 1), (1, 17), (23, 1), (2, 2), (3, 5), (39, 37), (40, 40)]
sizes = st.one_of(st.sampled_from(SPECIAL_SIZES), st.tuples(st.integers(1, 40), st.integers(1, 40)))
kinds = st.sampled_from(["flat", "noise", "gradient", "crop"])


@PROPERTY
@given(size=sizes, mode=st.sampled_from(MODES), kind=kinds, seed=st.integers(0, 2**32 - 1))
def test_round_trip_arrays(size, mode, kind, seed):
    assert_exact(make_content(kind, *size, mode, seed))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=sizes, mode=st.sampled_from(MODES), kind=kinds, seed=st.integers(0, 2**32 - 1))
def test_round_trip_pil_images(size, mode, kind, seed):
    arr = make_content(kind, *size, mode, seed)
    image = Image.fromarray(arr, mode)
    assert_exact(image, np.asarray(image))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (2, 3), (3, 2), (1, 130), (130, 1), (2, 129)])
@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_round_trip_degenerate_sizes(mode, size, kind):
    assert_exact(make_content(kind, *size, mode, seed=sum(size)))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_round_trip_whole_fixtures(name):
    arr = FIXTURE_ARRAYS[name]
    assert_exact(arr)
    assert_exact(np.ascontiguousarray(arr.transpose(1, 0, 2)))  # portrait
    assert_exact(arr[::-1, ::2])  # non-contiguous view


def _tiled_photo(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like image larger than the fixtures: tiled crops plus a little noise."""
    rng = np.random.default_rng(seed)
    tile = np.tile(FIXTURE_ARRAYS["kodim03_64x48.png"], (h // 48 + 1, w // 64 + 1, 1))[:h, :w]
    return np.clip(tile.astype(int) + rng.integers(-3, 4, tile.shape), 0, 255).astype(np.uint8)


def test_round_trip_more_pixels_than_one_encoder_block():
    from dcomp.methods import mlp_kernel

    img = _tiled_photo(270, 261, 1)
    assert (img.shape[0] - 1) * (img.shape[1] - 1) > 100 * mlp_kernel.ENCODE_BLOCK
    data = assert_exact(img)
    assert len(data) < 0.6 * img.size


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_large_images(mode):
    img = _tiled_photo(700, 520, 2)  # portrait: coded transposed
    img = {"L": img[:, :, 1], "RGB": img, "RGBA": np.concatenate([img, img[:, :, :1] // 2 + 100], axis=2)}[mode]
    assert_exact(img)
    assert_exact(np.ascontiguousarray(np.swapaxes(img, 0, 1)))


def test_round_trip_extreme_values():
    rng = np.random.default_rng(9)
    checker = (np.indices((24, 31)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert_exact(checker)
    assert_exact(np.stack([checker, 255 - checker, checker], axis=2))
    assert_exact(np.where(rng.random((30, 30, 4)) < 0.5, 0, 255).astype(np.uint8))
    assert_exact(np.zeros((17, 19, 3), np.uint8))
    assert_exact(np.full((17, 19, 4), 255, np.uint8))


def test_palette_image_is_stored_as_rgb():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (21, 18, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).quantize(16)
    assert image.mode == "P"
    data = assert_exact(image, np.asarray(image.convert("RGB")))
    assert dcomp.info(data)["mode"] == "RGB"


def test_palette_image_with_transparency_is_stored_as_rgba():
    image = Image.new("P", (10, 7), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (2, 2, 6, 5))
    image.info["transparency"] = 0
    data = assert_exact(image, np.asarray(image.convert("RGBA")))
    assert dcomp.info(data)["mode"] == "RGBA"


@pytest.mark.parametrize("mode,expected", [("LA", "RGBA"), ("1", "L")])
def test_other_8bit_modes_convert(mode, expected):
    base = Image.fromarray(make_content("crop", 12, 15, "RGBA", 1), "RGBA")
    image = base.convert(mode)
    data = assert_exact(image, np.asarray(image.convert(expected)))
    assert dcomp.info(data)["mode"] == expected


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_image_is_refused(mode):
    image = Image.new(mode, (8, 5))
    with pytest.raises(UnsupportedError, match=f"mode {mode}") as exc:
        dcomp.compress(image)
    assert isinstance(exc.value, DcompError)
    assert "not supported" in str(exc.value)


def test_16_bit_png_is_refused():
    buf = io.BytesIO()
    Image.fromarray(np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000).save(buf, "PNG")
    from dcomp.imageio import read_image

    with pytest.raises(UnsupportedError, match="not supported"):
        dcomp.compress(read_image(buf.getvalue()).image)


@pytest.mark.parametrize("array", [np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.float32),
                                   np.zeros((4, 4, 2), np.uint8), np.zeros((2, 4, 4, 3), np.uint8),
                                   np.zeros(5, np.uint8)])
def test_unsupported_arrays_are_refused(array):
    with pytest.raises(UnsupportedError):
        dcomp.compress(array)


def test_quality_is_refused_for_lossless_method():
    with pytest.raises(UnsupportedError):
        dcomp.compress(np.zeros((4, 4), np.uint8), quality=5)


def test_unknown_method_name():
    with pytest.raises(DcompError, match="unknown method"):
        dcomp.compress(np.zeros((4, 4), np.uint8), method="nosuch")


# ---------------------------------------------------------------- size bounds

def test_noise_costs_at_most_raw_size_plus_32_bytes():
    rng = np.random.default_rng(0)
    for shape in [(64, 64, 3), (64, 64), (33, 17, 4), (1, 1, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        data = assert_exact(img)
        assert len(data) <= img.size + 32, (shape, len(data), img.size)


def png_size(image: Image.Image) -> int:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return len(buf.getvalue())


COLOURS = [(200, 30, 30, 255), (20, 150, 40, 255), (30, 40, 200, 200), (240, 200, 0, 255)]


def _fill(mode: str, i: int):
    col = COLOURS[i % len(COLOURS)]
    return col[0] if mode == "L" else col[:3] if mode == "RGB" else col


def graphics(kind: str, mode: str) -> Image.Image:
    size = (96, 64)
    if kind == "flat":
        return Image.new(mode, size, _fill(mode, 0))
    if kind == "gradient":
        y, x = np.mgrid[0:size[1], 0:size[0]]
        arr = np.stack([x * 255 // (size[0] - 1), y * 255 // (size[1] - 1), (x + y) * 255 // sum(size),
                        np.full_like(x, 255)], axis=2).astype(np.uint8)
        return Image.fromarray(arr[:, :, 0] if mode == "L" else arr[:, :, :len(mode)], mode)
    image = Image.new(mode, size, {"L": 255, "RGB": (255, 255, 255), "RGBA": (255, 255, 255, 0)}[mode])
    draw = ImageDraw.Draw(image)
    if "rect" in kind:
        draw.rectangle([5, 5, 40, 30], fill=_fill(mode, 0))
        draw.rectangle([50, 10, 90, 50], outline=_fill(mode, 1), width=3)
    if "lines" in kind:
        for i in range(6):
            draw.line([(50 + i * 6, 55), (55 + i * 6, 40)], fill=_fill(mode, 3), width=2)
    if "text" in kind:
        draw.text((8, 8), "dcomp 123", fill=_fill(mode, 1))
        draw.text((20, 40), "lossless", fill=_fill(mode, 2))
    if "ellipse" in kind:
        draw.ellipse([10, 35, 45, 60], fill=_fill(mode, 2))
    return image


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["flat", "gradient", "rect", "text", "lines", "rect+lines"])
def test_graphics_smaller_than_png(kind, mode):
    image = graphics(kind, mode)
    data = assert_exact(image)
    assert len(data) < png_size(image), (kind, mode, len(data), png_size(image))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_drawing_with_ellipse_smaller_than_png(mode):
    # It was ~35% larger than PNG in the filtered mode (one filter per image where PNG picks
    # one per row); the palette mode codes its few colours' indices instead.
    image = graphics("rect+lines+ellipse", mode)
    data = assert_exact(image)
    assert len(data) < png_size(image), (mode, len(data), png_size(image))


def test_photo_crop_beats_raw_size():
    for name, arr in FIXTURE_ARRAYS.items():
        assert len(dcomp.compress(arr)) < 0.8 * arr.size, name


# ---------------------------------------------------------------- determinism

def test_same_input_same_bytes():
    for name in ("kodim03_64x48.png", "kodim23_33x21.png"):
        arr = FIXTURE_ARRAYS[name]
        first = dcomp.compress(arr)
        assert dcomp.compress(arr.copy()) == first
        assert dcomp.compress(Image.fromarray(arr)) == first, name
    gray = make_content("gradient", 31, 29, "L", 2)
    assert dcomp.compress(gray) == dcomp.compress(gray[:, :, None].copy()) == dcomp.compress(Image.fromarray(gray))


@pytest.fixture(scope="module")
def nets(weights_file):
    return registry.get("mlp").predictor.nets


def _extremes(n_in: int) -> list[list[int]]:
    alt = [255 if i % 2 else -255 for i in range(n_in)]
    return [[255] * n_in, [-255] * n_in, [0] * n_in, alt, [-v for v in alt],
            [255] * (n_in // 2) + [-255] * (n_in - n_in // 2)]


@pytest.mark.parametrize("n_priors", [0, 1, 2])
def test_fast_network_equals_reference(nets, n_priors):
    net = nets[n_priors]
    n_in = P.input_size(n_priors)
    assert net.w1.shape[1] == n_in
    rng = np.random.default_rng(100 + n_priors)
    rows = [list(map(int, r)) for r in rng.integers(-255, 256, (100, n_in))]
    # Photo-like inputs too: small differences around the reference.
    rows += [list(map(int, r)) for r in np.clip(rng.laplace(0, 6, (40, n_in)).round(), -255, 255).astype(int)]
    rows += _extremes(n_in)
    x = np.array(rows, dtype=np.float64)
    a2 = net.hidden(x)
    out = net.head(a2)
    assert a2.dtype == np.float64 and np.array_equal(a2, np.round(a2))
    for i, row in enumerate(rows):
        ref_a2, ref_out = P.reference_forward(net, row)
        assert a2[i].astype(np.int64).tolist() == ref_a2, i
        assert int(out[i]) == ref_out, i
    # The bound used by the exactness proof holds for every one of these inputs.
    assert np.all(a2 <= net.hidden_bounds())


def test_linear_head_matches_python_integers(nets):
    rng = np.random.default_rng(7)
    for n_priors in (0, 1, 2):
        a2_bound = nets[n_priors].hidden_bounds().astype(np.int64)
        bound = np.concatenate([a2_bound, np.full(P.input_size(n_priors), P.INPUT_MAX)]).astype(np.int64)
        for shift in (1, 8, 20, 40):
            # Coefficients as large as the 2**52 exactness limit allows (the decoder's own check).
            budget = (P.EXACT_LIMIT - (1 << shift) - 1) // max(int(bound.sum()), 1) - 1
            coef = rng.integers(-budget, budget + 1, len(bound))
            const = int(rng.integers(-budget, budget + 1))
            feats = [rng.integers(-b, b + 1, 60) if b else np.zeros(60, np.int64) for b in bound]
            feats = np.stack(feats, axis=1)
            extreme = np.sign(coef) * bound
            feats = np.vstack([feats, extreme, -extreme, np.zeros_like(extreme)])
            assert int(np.abs(coef) @ bound) + abs(const) + (1 << shift) < P.EXACT_LIMIT
            n_a2 = len(a2_bound)
            parts = [feats[:, :n_a2].astype(np.float64), feats[:, n_a2:].astype(np.float64)]
            coeffs = [coef[:n_a2].astype(np.float64), coef[n_a2:].astype(np.float64)]
            got = P.linear_head(parts, coeffs, const, shift)
            for i, row in enumerate(feats.tolist()):
                expected = (sum(int(c) * int(f) for c, f in zip(coef.tolist(), row)) + const
                            + (1 << (shift - 1))) >> shift
                assert int(got[i]) == expected, (n_priors, shift, i)


# ---------------------------------------------------------------- weights, through the API

def test_api_other_weights_refused(monkeypatch, fresh_registry, other_weights_dir):
    data = dcomp.compress(FIXTURE_ARRAYS["kodim23_33x21.png"])
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(other_weights_dir))
    fresh_registry._cache.clear()
    with pytest.raises(WeightsError, match="other mlp weights"):
        dcomp.decompress(data)
    other = dcomp.compress(FIXTURE_ARRAYS["kodim23_33x21.png"])
    assert other[4:8] != data[4:8]  # the model id in the header
    assert np.array_equal(dcomp.decompress(other), FIXTURE_ARRAYS["kodim23_33x21.png"])


def test_api_missing_weights(monkeypatch, fresh_registry, tmp_path):
    monkeypatch.setenv("DCOMP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="weights"):
        dcomp.compress(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("predictor", ["auto", "linear"])
@pytest.mark.parametrize("shape", [(270, 261, 3), (300, 140, 4), (9, 12, 3)])
def test_every_head_kind_and_band_count_round_trips(predictor, shape):
    """The decoder's fused wavefront kernel must agree with the encoder for the trained head
    (tiny images), the per-image network head and the linear ablation head, with 1 to 4 bands."""
    from dcomp.container import Header
    from dcomp.methods import mlp

    codec = registry.get("mlp")
    h, w, c = shape
    img = _tiled_photo(h, w, 3)
    img = img if c == 3 else np.concatenate([img, img[:, :, :1] // 3 + 60], axis=2)
    payload = codec._encode_predictive(img, predictor)  # this mode even where another is smaller
    assert payload[0] == mlp.MODE_PREDICTIVE
    bands = mlp.predictive_flags(payload[1])[1]
    coded_height = min(h, w)  # portrait images are coded transposed
    assert bands == mlp.Layout.band_count(coded_height)
    header = Header(1, codec.model_id(), w, h, {3: "RGB", 4: "RGBA"}[c])
    assert np.array_equal(codec.decode(header, [payload]), img)


# ---------------------------------------------------------------- decoding work bound (SPEC.md, mode 2)

@pytest.mark.parametrize("flags, shape, minimum", [
    (0, (10, 20, 3), 130),        # 20 + 2*10 wavefronts, 3 channels: 120 bytes + ceil(600 / 64)
    (1, (10, 20, 3), 160),        # coded transposed (20 high, 10 wide): 10 + 40 wavefronts
    (3 << 1, (10, 20, 3), 88),    # four bands of at most 3 rows: 20 + 6 wavefronts
    (0, (1, 1, 1), 4),            # 1 + 2 wavefronts, one sample
])
def test_work_bound_is_exact(flags, shape, minimum):
    from dcomp.methods import mlp

    assert mlp._pays_for_its_work(bytes([2, flags]) + bytes(minimum - 2), shape)
    assert not mlp._pays_for_its_work(bytes([2, flags]) + bytes(minimum - 3), shape)


def test_predictive_payloads_of_photos_pay_for_their_work():
    from dcomp.methods import mlp

    codec = registry.get("mlp")
    for arr in list(FIXTURE_ARRAYS.values()) + [_tiled_photo(270, 261, 1)]:
        payload = codec._encode_predictive(arr, "auto")
        assert mlp._pays_for_its_work(payload, arr.shape)
        assert mlp._pays_for_its_work(payload[:len(payload) // 3], arr.shape)  # with room to spare


def test_encoder_never_writes_a_predictive_payload_below_the_work_bound(monkeypatch):
    """A flat image's predictive payload is far below one byte per 64 samples: even when the
    filtered mode is made to lose, the encoder does not write it, and a reader refuses it."""
    from dcomp.container import Header
    from dcomp.errors import CorruptFileError
    from dcomp.methods import mlp

    codec = registry.get("mlp")
    flat = np.full((64, 96, 3), 120, np.uint8)
    predictive = codec._encode_predictive(flat, "auto")
    assert len(predictive) < flat.size // 64
    header = Header(1, codec.model_id(), 96, 64, "RGB")
    with pytest.raises(CorruptFileError, match="predictive payload too short for a 96x64 image"):
        codec.decode(header, [predictive])
    monkeypatch.setattr(mlp, "encode_filtered", lambda image, to_beat: bytes([mlp.MODE_FILTERED]) + bytes(10**6))
    monkeypatch.setattr(mlp, "encode_palette", lambda image: None)
    payload, = codec.encode(flat)
    assert payload[0] == mlp.MODE_STORED
    assert np.array_equal(codec.decode(header, [payload]), flat)


def test_filtered_decoding_holds_two_images_at_most():
    """The filtered mode's inverse runs in place: the decompressed planes and the interleaved
    output, nothing else image-sized (numpy's allocations, through tracemalloc)."""
    import tracemalloc

    from dcomp.methods import mlp

    rng = np.random.default_rng(4)
    image = np.repeat(rng.integers(0, 256, (600, 1, 4), dtype=np.uint8), 500, axis=1)  # 1.2 MB RGBA
    payload, = registry.get("mlp").encode(image)
    assert payload[0] == mlp.MODE_FILTERED and payload[1] != 0
    tracemalloc.start()
    try:
        out = mlp.decode_filtered(payload, image.shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, image)
    assert peak < 2.2 * image.nbytes, peak / image.nbytes


# ---------------------------------------------------------------- palette mode

def _palette_image(h: int, w: int, colours: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 256, (colours, channels), dtype=np.uint8)
    blocks = rng.integers(0, colours, (-(-h // 4), -(-w // 4)))
    return table[np.kron(blocks, np.ones((4, 4), int))[:h, :w]]


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (17, 5), (64, 48)])
def test_palette_images_round_trip(channels, size):
    image = _palette_image(*size, colours=min(7, size[0] * size[1]), channels=channels)
    data = dcomp.compress(image[:, :, 0] if channels == 1 else image, "mlp")
    out = dcomp.decompress(data)
    assert np.array_equal(out.reshape(image.shape), image)


def test_palette_png_with_transparency_uses_the_palette_mode():
    from dcomp import container
    from dcomp.methods.planes import MODE_PALETTE

    image = _palette_image(96, 80, colours=40, channels=4, seed=2)
    image[:10, :10, 3] = 0
    data = dcomp.compress(image, "mlp")
    assert container.parse(data).sections[0][0] == MODE_PALETTE
    assert np.array_equal(dcomp.decompress(data), image)


def test_a_64_colour_photo_is_far_smaller_in_the_palette_mode():
    photo = load_fixture("kodim03_64x48.png")
    quantized = np.asarray(Image.fromarray(photo).quantize(64).convert("RGB"))
    from dcomp.methods.planes import encode_filtered

    data = dcomp.compress(quantized, "mlp")
    assert len(data) < 0.8 * len(encode_filtered(quantized, 0))
    assert np.array_equal(dcomp.decompress(data), quantized)


def test_more_than_256_colours_are_not_a_palette_image():
    from dcomp.methods.planes import encode_palette

    colours = np.stack([np.arange(257) % 256, np.arange(257) // 256, np.zeros(257, int)], axis=1).astype(np.uint8)
    image = colours[np.arange(32 * 32) % 257].reshape(32, 32, 3)
    assert encode_palette(image) is None
    assert encode_palette(image[:8]) is not None  # 256 of them


def _ramp_palette_image(channels: int) -> np.ndarray:
    """64 colours along a ramp (as charts and slides have them), in blocks."""
    ramp = (np.arange(64)[:, None] * np.array([3, 2, 1, 4])[None, :channels] + 20).astype(np.uint8)
    blocks = np.random.default_rng(3).integers(0, 64, (12, 16))
    return ramp[np.kron(blocks, np.ones((4, 4), int))]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_palette_of_similar_colours_is_packed(channels):
    from dcomp import container
    from dcomp.methods.planes import MODE_PALETTE_PACKED

    image = _ramp_palette_image(channels)
    data = dcomp.compress(image[:, :, 0] if channels == 1 else image, "mlp")
    if channels > 1:  # one channel of 64 levels: the filtered mode can be as small
        assert container.parse(data).sections[0][0] == MODE_PALETTE_PACKED
    assert np.array_equal(dcomp.decompress(data).reshape(image.shape), image)


@pytest.mark.parametrize("damage", ["no-size", "size-past-end", "colours-not-filtered", "colours-wrong-count",
                                    "index-out-of-range", "no-indices"])
def test_crafted_packed_palette_payloads_are_one_clear_error(damage):
    from dcomp import container
    from dcomp.errors import CorruptFileError
    from dcomp.methods.planes import MODE_PALETTE_PACKED, encode_filtered
    from dcomp.varint import write_varint

    h, w = 6, 5
    colours = encode_filtered(np.zeros((2, 1, 3), np.uint8), 0)
    indices = encode_filtered(np.full((h, w, 1), 3 if damage == "index-out-of-range" else 1, np.uint8), 0)
    head = bytes([MODE_PALETTE_PACKED, 1])
    payload = {"no-size": head,
               "size-past-end": head + write_varint(len(colours) + 99) + colours + indices,
               "colours-not-filtered": head + write_varint(4) + bytes([2, 0, 0, 0]) + indices,
               "colours-wrong-count": head + write_varint(len(encode_filtered(np.zeros((3, 1, 3), np.uint8), 0)))
               + encode_filtered(np.zeros((3, 1, 3), np.uint8), 0) + indices,
               "index-out-of-range": head + write_varint(len(colours)) + colours + indices,
               "no-indices": head + write_varint(len(colours)) + colours}[damage]
    header = container.Header(1, registry.get("mlp").model_id(), w, h, "RGB")
    with pytest.raises(CorruptFileError, match="corrupted|truncated"):
        dcomp.decompress(container.Container(header, [payload]).to_bytes())


@pytest.mark.parametrize("damage", ["index-out-of-range", "short-table", "not-filtered", "empty"])
def test_crafted_palette_payloads_are_one_clear_error(damage):
    from dcomp import container
    from dcomp.errors import CorruptFileError
    from dcomp.methods.planes import MODE_PALETTE, encode_filtered

    h, w = 6, 5
    index = np.full((h, w, 1), 3, np.uint8)  # 3 >= 2 colours
    if damage == "index-out-of-range":
        payload = bytes([MODE_PALETTE, 1]) + bytes(6) + encode_filtered(index, 0)
    elif damage == "short-table":
        payload = bytes([MODE_PALETTE, 200]) + bytes(6)
    elif damage == "not-filtered":
        payload = bytes([MODE_PALETTE, 1]) + bytes(6) + bytes([2, 0, 0, 0])
    else:
        payload = bytes([MODE_PALETTE])
    header = container.Header(1, registry.get("mlp").model_id(), w, h, "RGB")
    with pytest.raises(CorruptFileError, match="corrupted mlp data"):
        dcomp.decompress(container.Container(header, [payload]).to_bytes())


@pytest.mark.parametrize("shape, bands", [((1, 1, 3), 1), ((5, 7, 1), 2), ((40, 3, 4), 4), ((100, 77, 3), 3)])
def test_layout_pads_each_band_as_pad_planes_does(shape, bands):
    from dcomp.methods import mlp
    image = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    layout = mlp.Layout(shape[0], shape[1], bands)
    stack = layout.pad(image)
    per_band = [P.pad_planes(image[y0:y0 + hb]) for y0, hb in zip(layout.starts, layout.heights)]
    assert np.array_equal(stack, np.concatenate(per_band, axis=1))
    assert np.array_equal(layout.unpad(stack), image)
