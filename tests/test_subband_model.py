"""dcomp.entropy.subband_model, the coefficient coder of `cnn-ae` and `cnn-ae-ft`: the table
every coefficient gets (torch for training, numpy for the encoder's refinement and for coding,
all against the definition in the module's docstring written out with loops), exact round trips under extreme tables,
corrupted coefficient streams, the stream-length bound, and how close the integer tables and
the coded size come to the model's own likelihood (what training minimized).

Most tests build their own models, so they do not depend on the installed weights; those that
measure the installed weights skip without them and use loose tolerances, so retrained
weights pass."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcomp import registry
from dcomp.entropy import laplace
from dcomp.entropy import subband_model as S
from dcomp.entropy.dc import dc_from_residual, dc_residual
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.methods import cnn_ae
from dcomp.varint import write_varint

from conftest import load_fixture, split_payload

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread

LAYOUT = S.SubbandLayout(cnn_ae.LEVELS, cnn_ae.QUALITIES)
PHOTO = load_fixture("kodim03_64x48.png")  # (48, 64, 3)
LOG_TINY, LOG_HUGE = math.log(1e-3), math.log(500.0)
WIDE_SCALE = 20.0  # every table this wide: each coefficient costs nearly a whole bit at least




# ---------------------------------------------------------------- helpers

def loaded(model: S.SubbandEntropyModel) -> S.SubbandEntropyModel:
    tables = model.export_tables()
    model.load_tables(tables["table_freq"], tables["table_offsets"], "test")
    return model


def depth_tables(depth: int) -> slice:
    """The detail tables of one level (depth 0: the coarsest)."""
    end = LAYOUT.class_base(depth + 1, 0, True) if depth + 1 < LAYOUT.levels else LAYOUT.detail_tables
    return slice(LAYOUT.class_base(depth, 0, True), end)


def lowpass_tables(q: int) -> list[int]:
    return [LAYOUT.lowpass_table(q, c) for c in range(S.COLOURS)]


def zero_bands(height: int, width: int) -> list[np.ndarray]:
    return [np.zeros(s, np.int64) for s in LAYOUT.band_shapes(height, width)]


def join_payload(escapes: list[bytes], words: bytes, count: int | None = None) -> bytes:
    return write_varint(len(escapes) if count is None else count) + b"".join(escapes) + words


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def sparse_bands(rng, height: int, width: int, n: int | None = None) -> list[np.ndarray]:
    """Mostly zeros, small values at a density that varies over the image, a few medium and
    huge ones: the neighbourhoods fill every local and external bin, 0 and the cap included."""
    out = []
    for c, h, w in LAYOUT.band_shapes(height, width):
        shape = (c, h, w) if n is None else (n, c, h, w)
        density = 10.0 ** rng.uniform(-2.5, -0.1, shape[:-3] + (1, h, w))
        y = np.where(rng.random(shape) < density, rng.integers(-3, 4, shape), 0)
        y = np.where(rng.random(shape) < 0.02, rng.integers(-300, 301, shape), y)
        out.append(np.where(rng.random(shape) < 0.003, rng.integers(-2 ** 30, 2 ** 30, shape), y).astype(np.int64))
    return out


def hard_cases(rng, height: int, width: int) -> dict[str, list[np.ndarray]]:
    """Named band sets from hard distributions for the coder."""
    shapes = LAYOUT.band_shapes(height, width)
    spike = zero_bands(height, width)
    b = int(rng.integers(1, len(shapes)))
    spike[b][tuple(int(rng.integers(n)) for n in shapes[b])] = -4321
    ll_spike = zero_bands(height, width)
    ll_spike[0][0, -1, -1] = 2 ** 31  # a low-pass value past int32, as its own residual
    return {
        "wide": [rng.integers(-5000, 5001, s) for s in shapes],
        "zeros": zero_bands(height, width),
        "spike": spike,
        "ll_spike": ll_spike,
        "laplace": [np.rint(rng.laplace(0, 3, s)).astype(np.int64) for s in shapes],
        "heavy": [np.rint(rng.standard_cauchy(s) * 4).clip(-10 ** 6, 10 ** 6).astype(np.int64) for s in shapes],
        "sparse": sparse_bands(rng, height, width),
    }


# ---------------------------------------------------------------- models

@pytest.fixture(scope="module")
def extreme(tmp_path_factory):
    """A freshly built network whose coding tables are extreme, saved and loaded back as the
    codec loads weights: detail level 0 (coarsest) has both scales 1e-3 (support 1: nearly
    every value escapes), level 1 both 500 (support capped at MAX_SUPPORT), level 2 mixes the
    two, level 3 draws every scale and mixing weight at random, level 4 keeps the initial
    tables; the low-pass tables of quality index 0..3 likewise, 4..7 initial.
    Returns (network, Weights)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the convolutions' random init: the same file on every run
        model = cnn_ae.build_model()
    rng = np.random.default_rng(0)
    ls, mix = model.entropy.log_scales, model.entropy.mix_logit
    with torch.no_grad():
        for tables, kind in ((depth_tables(0), "tiny"), (depth_tables(1), "huge"), (depth_tables(2), "mixed"),
                             (depth_tables(3), "random"), (lowpass_tables(0), "tiny"), (lowpass_tables(1), "huge"),
                             (lowpass_tables(2), "mixed"), (lowpass_tables(3), "random")):
            n = len(ls[tables])
            if kind == "tiny":
                ls[tables] = LOG_TINY
            elif kind == "huge":
                ls[tables] = LOG_HUGE
            elif kind == "mixed":
                ls[tables] = torch.tensor([LOG_TINY, LOG_HUGE])
                mix[tables] = 0.0
            else:
                ls[tables] = torch.from_numpy(rng.uniform(LOG_TINY, math.log(900.0), (n, 2))).float()
                mix[tables] = torch.from_numpy(rng.uniform(-30, 30, n)).float()
    path = tmp_path_factory.mktemp("extreme_weights") / "cnn-ae.npz"
    cnn_ae.save_weights(model, path, "cnn-ae")
    return model, cnn_ae.Weights(path)


@pytest.fixture(scope="module")
def initial() -> S.SubbandEntropyModel:
    """The untrained model's tables: realistic shapes, one per class and context."""
    return loaded(S.SubbandEntropyModel(LAYOUT))


@pytest.fixture(scope="module")
def wide() -> S.SubbandEntropyModel:
    """Every table of scale WIDE_SCALE: a large floor on what each coefficient costs."""
    model = S.SubbandEntropyModel(LAYOUT)
    with torch.no_grad():
        model.log_scales[:] = math.log(WIDE_SCALE)
    return loaded(model)


@pytest.fixture(scope="module")
def installed():
    """(network, its loaded Weights) of the installed cnn-ae weights."""
    path = registry.weights_dir() / registry.METHODS["cnn-ae"][3]
    if not path.is_file():
        pytest.skip(f"no cnn-ae weights at {path}")
    weights = cnn_ae.Weights(path)
    try:
        net = weights.net("cpu")
    except WeightsError as exc:  # e.g. the retired backbone's weights still installed
        pytest.skip(f"installed cnn-ae weights are not this backbone's ({exc})")
    return net, weights


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """(network, Weights) of an untrained network saved and loaded back: the plain CDF 9/7
    with the initial tables, whatever weights are installed."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cnn_ae.build_model()
    path = tmp_path_factory.mktemp("untrained") / "cnn-ae.npz"
    cnn_ae.save_weights(model, path, "cnn-ae")
    weights = cnn_ae.Weights(path)
    return weights.net("cpu"), weights


@pytest.fixture(params=["untrained", "installed"])
def network(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------- integer tables

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
    assert table[support] == table[:-1].max()  # value 0 is the most probable value


def tables_are_valid(freq: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Checks SPEC-style table invariants; returns each table's support K."""
    lengths = np.diff(offsets)
    assert len(offsets) == LAYOUT.tables + 1
    assert offsets[0] == 0 and offsets[-1] == len(freq)
    assert (lengths % 2 == 0).all() and lengths.min() >= 4
    assert ((lengths - 2) // 2 <= laplace.MAX_SUPPORT).all()
    assert freq.min() >= 1
    assert (np.add.reduceat(freq.astype(np.int64), offsets[:-1]) == 1 << laplace.PRECISION).all()
    return (lengths - 2) // 2


def test_extreme_tables_are_valid(extreme):
    _, weights = extreme
    support = tables_are_valid(weights.file.arrays["table_freq"], weights.file.arrays["table_offsets"])
    assert (support[depth_tables(0)] == 1).all() and (support[lowpass_tables(0)] == 1).all()
    assert (support[depth_tables(1)] == laplace.MAX_SUPPORT).all()
    assert (support[lowpass_tables(1)] == laplace.MAX_SUPPORT).all()


def test_installed_tables_are_the_export_of_their_parameters(installed):
    """The integer tables stored with the weights are exactly those made from the stored
    parameters: coding uses what training's likelihood describes (and nothing stale)."""
    net, weights = installed
    stored = weights.file.arrays["table_freq"], weights.file.arrays["table_offsets"]
    tables_are_valid(*stored)
    exported = net.entropy.export_tables()
    assert np.array_equal(exported["table_freq"], stored[0])
    assert np.array_equal(exported["table_offsets"], stored[1])


def test_tables_are_deterministic(extreme, tmp_path):
    rng = np.random.default_rng(3)
    log_scales = rng.uniform(LOG_TINY, math.log(900.0), (40, 2))
    mix = rng.uniform(-30, 30, 40)
    first, second = laplace.build_tables(log_scales, mix), laplace.build_tables(log_scales.copy(), mix.copy())
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    model, weights = extreme  # saving the same network again gives the same integer tables
    cnn_ae.save_weights(model, tmp_path / "again.npz", "cnn-ae")
    again = cnn_ae.Weights(tmp_path / "again.npz").file.arrays
    assert all(np.array_equal(again[k], weights.file.arrays[k]) for k in ("table_freq", "table_offsets"))


def sample_mixture(rng, log_scales: np.ndarray, mix_logit: np.ndarray, n: int) -> np.ndarray:
    """n rounded samples per table from its two-part Laplace mixture: (tables, n)."""
    first = rng.random((len(mix_logit), n)) < 1 / (1 + np.exp(-mix_logit[:, None]))
    scale = np.exp(np.where(first, log_scales[:, None, 0], log_scales[:, None, 1]))
    return np.rint(rng.laplace(0.0, scale)).astype(np.int64)


# Integer tables against the float likelihood training minimizes: within 1% of the
# likelihood's bits, plus 0.002 bit a sample (a nearly certain value costs next to nothing in
# both, but its integer frequency is rounded; measured: 0.02% apart on random tables).
LIKELIHOOD_RELATIVE, LIKELIHOOD_PER_SAMPLE = 0.01, 0.002


def assert_tables_match_likelihood(model: S.SubbandEntropyModel, tables: np.ndarray, values: np.ndarray) -> None:
    coded = float(model.code_length(values, tables).sum())
    p = laplace.likelihood(torch.from_numpy(values.astype(np.float64)),
                           model.log_scales.detach().double()[torch.from_numpy(tables)],
                           model.mix_logit.detach().double()[torch.from_numpy(tables)])
    modelled = float(-torch.log2(p).sum())
    assert abs(coded - modelled) <= LIKELIHOOD_RELATIVE * modelled + LIKELIHOOD_PER_SAMPLE * values.size, \
        (coded, modelled, values.size)


def test_integer_tables_match_the_likelihood_on_its_own_samples():
    """Random parameters over the range training reaches (scales 0.05..200, any mix), 2000
    samples of each table's own distribution."""
    rng = np.random.default_rng(4)
    model = S.SubbandEntropyModel(LAYOUT)
    chosen = rng.choice(LAYOUT.tables, 300, replace=False)
    with torch.no_grad():
        model.log_scales[chosen] = torch.from_numpy(rng.uniform(math.log(0.05), math.log(200.0), (300, 2))).float()
        model.mix_logit[chosen] = torch.from_numpy(rng.uniform(-6, 6, 300)).float()
    loaded(model)
    params = model.log_scales.detach().double().numpy()[chosen], model.mix_logit.detach().double().numpy()[chosen]
    values = sample_mixture(rng, *params, 2000)
    assert_tables_match_likelihood(model, np.repeat(chosen[:, None], 2000, 1), values)


def test_tables_match_the_likelihood_on_real_coefficients(network):
    """A network's tables on what they code: a photo's rounded coefficients at every
    quality, each under the table its context picks."""
    net, weights = network
    x = cnn_ae.image_tensor(np.pad(PHOTO, ((0, 16), (0, 0), (0, 0)), mode="reflect"), "cpu")
    with torch.no_grad():
        for q in range(cnn_ae.QUALITIES):
            qi = torch.tensor([q])
            y = [torch.round(b) for b in net.analysis(x, qi)]
            tables = net.entropy.table_indices(y, qi)
            coded = [y[0] - S.lowpass_prediction(y[0])] + y[1:]
            values = np.concatenate([c.numpy().astype(np.int64).ravel() for c in coded])
            assert_tables_match_likelihood(weights.entropy, np.concatenate([t.numpy().ravel() for t in tables]), values)


# ---------------------------------------------------------------- predicted bits and coded size

# The model's bits of rounded coefficients against the payload compress writes: within 1% plus
# 16 bytes (the escape count's varint, the ANS coder's final state, escapes written as bytes;
# measured with the untrained network: 4-8 bytes over at every quality).
SIZE_RELATIVE, SIZE_BYTES = 0.01, 16


def test_predicted_bits_agree_with_the_coded_size(network):
    """What training and validation report as the rate (the model's bits of the rounded
    coefficients) is what the file spends."""
    net, weights = network
    image = np.pad(PHOTO, ((0, 80), (0, 128), (0, 0)), mode="symmetric")  # 128x192 of real content
    x = cnn_ae.image_tensor(image, "cpu")
    with torch.no_grad():
        for q in range(cnn_ae.QUALITIES):
            qi = torch.tensor([q])
            v = net.analysis(x, qi)
            predicted = float(net.code(v, qi, rate_on="rounded")[1][0])
            payload = weights.entropy.compress([torch.round(b)[0].numpy().astype(np.int64) for b in v], q)
            coded = len(payload) * 8
            assert abs(coded - predicted) <= SIZE_RELATIVE * predicted + SIZE_BYTES * 8, (q, coded, predicted)


# ---------------------------------------------------------------- contexts

def tables_by_definition(bands: list[np.ndarray], q: int) -> list[np.ndarray]:
    """The table of every coefficient as the module's docstring defines it, with loops over
    positions and neighbours (one image: bands [LL, D_L, ..., D_1], each (C, h, w))."""
    bands = [np.abs(b.astype(object)) for b in bands]  # Python integers: no overflow, exact
    ll = np.zeros(bands[0].shape, np.int64)
    for c in range(S.COLOURS):
        ll[c] = LAYOUT.lowpass_table(q, c)
    out = [ll]

    def box(a, i, j):
        h, w = a.shape
        return sum(a[ii, jj] for ii in range(i - 1, i + 2) for jj in range(j - 1, j + 2) if 0 <= ii < h and 0 <= jj < w)

    def bin_of(v):  # the bit length of v, capped at 7
        return min(int(v).bit_length(), 7)

    for depth in range(LAYOUT.levels):
        band, parent = bands[depth + 1], (bands[depth] if depth > 0 else None)
        _, h, w = band.shape
        tables = np.zeros(band.shape, np.int64)
        for ch in range(9):
            o, c = divmod(ch, S.COLOURS)
            for i in range(h):
                for j in range(w):
                    phase = {(0, 0): 0, (1, 1): 1, (0, 1): 2, (1, 0): 3}[(i % 2, j % 2)]
                    local = 0
                    if phase:  # neighbours of earlier phases, decoded before this one
                        decoded = [band[ch, ii, jj] for ii in range(i - 1, i + 2) for jj in range(j - 1, j + 2)
                                   if 0 <= ii < h and 0 <= jj < w and (ii, jj) != (i, j)
                                   and {(0, 0): 0, (1, 1): 1, (0, 1): 2, (1, 0): 3}[(ii % 2, jj % 2)] < phase]
                        local = 8 * sum(decoded) // {1: 4, 2: 4, 3: 8}[phase]
                    external = 0
                    if parent is not None:
                        external += 8 * box(parent[ch], i // 2, j // 2) // 9
                    if o == 1:  # the HL sibling of the same colour
                        external += 8 * box(band[c], i, j) // 9
                    if o == 2:  # HL and LH
                        external += 8 * (box(band[c], i, j) + box(band[S.COLOURS + c], i, j)) // 18
                    if c > 0:  # the luma of the same orientation
                        external += 8 * box(band[o * S.COLOURS], i, j) // 9
                    base = ((depth * 9 + ch) * 2 + (phase > 0)) * S.LOCAL_BINS * S.EXTERNAL_BINS
                    tables[ch, i, j] = base + bin_of(local) * S.EXTERNAL_BINS + bin_of(external)
        out.append(tables)
    return out


def torch_tables(model: S.SubbandEntropyModel, bands: list[np.ndarray], q: int) -> list[np.ndarray]:
    """Training's table_indices (torch) for one image."""
    y = [torch.from_numpy(b.astype(np.float64))[None] for b in bands]
    return [t[0].numpy() for t in model.table_indices(y, torch.tensor([q]))]


def encoder_tables(model: S.SubbandEntropyModel, bands: list[np.ndarray], q: int) -> list[np.ndarray]:
    """coefficient_tables (numpy, what the encoder's refinement prices moves with): the detail
    channels it yields, and the low-pass tables of quality q."""
    out = [np.zeros(b.shape, np.int64) for b in bands]
    for c in range(S.COLOURS):
        out[0][c] = LAYOUT.lowpass_table(q, c)
    seen = set()
    for b, ch, tables in model.coefficient_tables([b.astype(np.int64) for b in bands], q):
        out[b][ch] = tables
        seen.add((b, ch))
    assert seen == {(b, ch) for b in range(1, len(bands)) for ch in range(9)}  # every detail channel
    return out


def walk_tables(model: S.SubbandEntropyModel, bands: list[np.ndarray], q: int) -> list[np.ndarray]:
    """The tables the numpy coding walk (compress and decompress) assigns, position by position."""
    out = [np.full(b.shape, -1, np.int64) for b in bands]

    def record(b: int, ch: int, pos: np.ndarray, t: int) -> None:
        out[b][ch].reshape(-1)[pos] = t

    model._walk([b.astype(np.int64) for b in bands], q, record)
    return out


def test_tables_follow_the_definition(initial):
    rng = np.random.default_rng(7)
    seen_local, seen_external = set(), set()
    for height, width, q in [(32, 32, 0), (32, 64, 5), (64, 32, 7)]:
        bands = sparse_bands(rng, height, width)
        want = tables_by_definition(bands, q)
        assert same(torch_tables(initial, bands, q), want), (height, width)
        assert same(encoder_tables(initial, bands, q), want), (height, width)
        assert same(walk_tables(initial, bands, q), want), (height, width)
        for t in want[1:]:
            seen_local.update((t % 64 // 8).ravel().tolist())
            seen_external.update((t % 8).ravel().tolist())
    assert seen_local == seen_external == set(range(8))  # every bin exercised, the caps included


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_table_indices_equal_the_numpy_walk(initial, device):
    """Training's table_indices on a batch (on the device) against coding's walk, item by item."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(8)
    for height, width in [(32, 32), (64, 96), (96, 64)]:
        batch = sparse_bands(rng, height, width, n=3)
        q = torch.tensor([0, 3, 7], device=device)
        got = initial.table_indices([torch.from_numpy(b.astype(np.float64)).to(device) for b in batch], q)
        for n in range(3):
            want = walk_tables(initial, [b[n] for b in batch], int(q[n]))
            assert same([t[n].cpu().numpy() for t in got], want), (height, width, n)


def test_dc_residual_inverts_and_matches_the_training_prediction():
    """The low-pass band is coded as differences from its left (first column: upper)
    neighbour; training's lowpass_prediction must subtract the same."""
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
        t = torch.from_numpy(y.astype(np.float64))
        assert np.array_equal((t - S.lowpass_prediction(t)).numpy().astype(np.int64), want)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("q", [0, 1, 2, 3, 5])
def test_bands_round_trip_exactly_under_extreme_tables(extreme, q):
    entropy = extreme[1].entropy
    rng = np.random.default_rng(100 + q)
    for height, width in [(32, 32), (32, 96)]:
        for name, bands in hard_cases(rng, height, width).items():
            out = entropy.decompress(entropy.compress(bands, q), q, height, width)
            assert all(b.dtype == np.int64 for b in out)
            assert same(out, bands), (name, height, width)


# ---------------------------------------------------------------- corrupted streams

def test_escape_list_must_match_the_stream(extreme):
    entropy = extreme[1].entropy
    rng = np.random.default_rng(11)
    bands = [rng.integers(-50, 51, s) for s in LAYOUT.band_shapes(32, 32)]
    payload = entropy.compress(bands, 0)  # support 1 in the low-pass and the coarsest level
    escapes, words = split_payload(payload)
    assert len(escapes) > 20
    assert same(entropy.decompress(payload, 0, 32, 32), bands)
    with pytest.raises(CorruptFileError, match="data left over"):  # one escape more than used
        entropy.decompress(join_payload(escapes + [write_varint(6)], words), 0, 32, 32)
    with pytest.raises(CorruptFileError, match="missing escapes"):  # one fewer
        entropy.decompress(join_payload(escapes[:-1], words), 0, 32, 32)
    with pytest.raises(CorruptFileError):  # a count one too high: the first ANS bytes read as an escape
        entropy.decompress(join_payload(escapes, words, len(escapes) + 1), 0, 32, 32)


def test_corrupted_payloads_are_refused(initial):
    rng = np.random.default_rng(12)
    bands = [np.rint(rng.laplace(0, 1.5, s)).astype(np.int64) for s in LAYOUT.band_shapes(32, 64)]
    payload = initial.compress(bands, 3)
    assert same(initial.decompress(payload, 3, 32, 64), bands)
    escapes, words = split_payload(payload)
    assert len(words) % 4 == 0 and len(words) >= 4
    for cut in (1, 2, 3, 5):  # the words cut to a length that is not whole words
        with pytest.raises(CorruptFileError, match="bad length"):
            initial.decompress(payload[:-cut], 3, 32, 64)
    with pytest.raises(CorruptFileError, match="zero word"):  # an ANS stream never ends in one
        initial.decompress(payload + bytes(4), 3, 32, 64)
    too_many = 3 * 32 * 64 + 1  # more escapes claimed than the image has coefficients
    with pytest.raises(CorruptFileError, match="more escapes than coefficients"):
        initial.decompress(join_payload(escapes, bytes(too_many) + words, too_many), 3, 32, 64)
    for bad in (b"", b"\x80"):  # no escape count; a varint cut short
        with pytest.raises(CorruptFileError):
            initial.decompress(bad, 3, 32, 64)


def test_appended_words_are_left_over(initial):
    """rANS has no end marker, so extra data is caught only when decoding stops before
    reaching it ('data left over'); a stream that decodes past its end reads as garbage.
    With realistic tables most appended words are caught; none may crash the decoder."""
    rng = np.random.default_rng(13)
    bands = [np.rint(rng.laplace(0, 1.5, s)).astype(np.int64) for s in LAYOUT.band_shapes(32, 64)]
    payload = initial.compress(bands, 5)
    caught = 0
    for word in rng.integers(1, 2 ** 32, 32, dtype=np.uint64):
        try:
            out = initial.decompress(payload + int(word).to_bytes(4, "little"), 5, 32, 64)
        except CorruptFileError:  # left over, or garbage needing escapes the list lacks
            caught += 1
        else:
            assert [b.shape for b in out] == [b.shape for b in bands] and not same(out, bands)
    assert caught >= 16, caught


# ---------------------------------------------------------------- the length bound

def test_stream_cost_sums_each_class_floor(wide, extreme):
    """The reader's floor: per coefficient, the smallest 2**24 - (largest frequency) over the
    tables its class may use (it knows the class, not the context)."""
    height, width = 64, 96
    for model in (wide, extreme[1].entropy):
        floors = np.array([(1 << laplace.PRECISION) - int(model.table(t).max()) for t in range(LAYOUT.tables)])
        per_class = floors[:LAYOUT.detail_tables].reshape(LAYOUT.levels, 9, -1).min(-1)
        shapes = LAYOUT.band_shapes(height, width)
        for q in (0, 5):
            want = int(floors[LAYOUT.lowpass_table(q, 0):LAYOUT.lowpass_table(q, 0) + 3].sum()) \
                * shapes[0][1] * shapes[0][2]
            want += sum(int(per_class[d].sum()) * h * w for d, (_, h, w) in enumerate(shapes[1:]))
            assert model.stream_cost(q, height, width) == want
    assert wide.stream_cost(1, height, width) > 0.95 * 3 * height * width * (1 << laplace.PRECISION)


def test_stream_length_bound_is_exact(wide):
    """N words are refused for an image of C coefficients exactly when
    C * cost > 2**24 * (32 N + 64); the check comes before any decoding."""
    height, width = 32, 64
    cost = wide.stream_cost(1, height, width)
    words = -(-(cost - (64 << 24)) // (32 << 24))  # the fewest that pass
    assert words > 100
    with pytest.raises(CorruptFileError, match="too short for 64x32"):
        wide.decompress(write_varint(0) + b"\xff" * (4 * (words - 1)), 1, height, width)
    try:  # random words decode to something or fail later, but not on the length bound
        wide.decompress(write_varint(0) + b"\xff" * (4 * words), 1, height, width)
    except CorruptFileError as exc:
        assert "too short" not in str(exc)


def test_encoder_refuses_coefficients_whose_stream_is_too_short(wide):
    """All coefficients at -K (symbol 0 of every table) cost next to nothing in an empty ANS
    coder: the stream would be shorter than any reader accepts, so it is never written."""
    k = (len(wide.table(0)) - 2) // 2  # every table: the same support
    bands = [np.full(s, -k, np.int64) for s in LAYOUT.band_shapes(32, 32)]
    bands[0] = dc_from_residual(bands[0])  # the low-pass residuals -K too
    with pytest.raises(UnsupportedError, match="shorter than the format allows"):
        wide.compress(bands, 1)
    with pytest.raises(CorruptFileError, match="too short"):
        wide.decompress(write_varint(0), 1, 32, 32)
