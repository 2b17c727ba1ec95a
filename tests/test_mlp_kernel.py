"""The compiled `mlp` kernels against the straightforward implementation.

The reference here is formats/SPEC.md's decoding written plainly with `mlp_predictor`'s numpy
definitions (the normative ones): wavefront by wavefront, sample by sample. The kernels must
give the same predictions, residuals, contexts and images on random inputs, extreme inputs and
real crops, for every head kind, band count and channel count, with the committed weights and
with random networks whose sizes the kernels have not seen (odd hidden widths, large weights).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import zstandard

import dcomp
from dcomp import container, registry
from dcomp.container import Header
from dcomp.entropy import streams as symbol_streams
from dcomp.errors import CorruptFileError
from dcomp.methods import mlp
from dcomp.methods import mlp_kernel as K
from dcomp.methods import mlp_predictor as P
from dcomp.varint import read_varint, write_varint

from conftest import FIXTURE_NAMES, load_fixture

MODES = {1: "L", 3: "RGB", 4: "RGBA"}
VARINT_MAX = 1 << 35  # dcomp.varint reads at most 5 bytes
HEAD_KINDS = (mlp.HEAD_TRAINED, mlp.HEAD_NETWORK_FIT, mlp.HEAD_LINEAR_FIT)


# ---------------------------------------------------------------- the reference

def reference_offset(net: P.IntegerNet, kind: int, head, x: np.ndarray) -> np.ndarray:
    if kind == mlp.HEAD_TRAINED:
        return net.head(net.hidden(x))
    coef = head.coef.astype(np.float64)
    n_in = x.shape[1]
    if kind == mlp.HEAD_NETWORK_FIT:
        a2 = net.hidden(x)
        n_a = a2.shape[1]
        return P.linear_head([a2, x], [coef[:n_a], coef[n_a:n_a + n_in]], int(head.coef[-1]), head.shift)
    return P.linear_head([x], [coef[:n_in]], int(head.coef[-1]), head.shift)


def reference_pass(stack, flat, channel, priors, net, heads):
    """Residuals of each (kind, head) and the gradient energy, as the spec defines them."""
    x, ref = P.gather_inputs(stack, flat, channel, priors)
    x = x.astype(np.float64)
    actual = stack.reshape(-1)[channel * stack[0].size + flat].astype(np.int64)
    residuals = [((actual - np.clip(ref + reference_offset(net, kind, head, x), 0, 255) + 128) & 255) - 128
                 for kind, head in heads]
    return np.array(residuals), P.gradient_energy(x, channel, priors)


def reference_decode(codec: mlp.MlpCodec, payload: bytes, shape) -> np.ndarray:
    """Decoding order, prediction, contexts and symbols exactly as formats/SPEC.md states."""
    transposed, bands, learned = mlp.predictive_flags(payload[1])
    h, w, c = shape
    coded = codec.parse_predictive(payload, (w, h, c) if transposed else shape, bands, learned)
    layout = coded.layout
    stack, res = layout.pad(coded.image), layout.pad(coded.border_res)
    vals, rflat, plane = stack.reshape(-1), res.reshape(-1), stack[0].size
    k = coded.thresholds.shape[1] + 1
    taken = np.zeros((len(coded.order), k), int)
    for t in range(3, layout.w - 1 + 2 * (max(layout.heights) - 1) + 1):
        flat = np.array([(layout.row0[b] + y) * layout.pw + t - 2 * y + P.PAD_LEFT
                         for b, hb in enumerate(layout.heights) for y in range(1, hb) if 1 <= t - 2 * y < layout.w],
                        dtype=np.int64)
        for ci, ch in enumerate(coded.order):
            if not len(flat):
                continue
            priors = coded.priors[ch]
            x, ref = P.gather_inputs(stack, flat, ch, priors)
            x = x.astype(np.float64)
            net = codec.predictor.nets[len(priors)]
            pred = np.clip(ref + reference_offset(net, coded.kind, coded.heads[ch], x), 0, 255)
            features = P.energy_features(res, flat, P.gradient_energy(x, ch, priors), ch, priors)
            ctx = np.searchsorted(coded.thresholds[ci], P.context_energy(features, coded.energy[ch]), side="right")
            for i, p in enumerate(flat):
                sym = int(coded.streams[ci * k + ctx[i]][taken[ci, ctx[i]]])
                taken[ci, ctx[i]] += 1
                r = sym >> 1 if sym % 2 == 0 else -(sym >> 1) - 1
                at = ch * plane + p
                vals[at], rflat[at] = (pred[i] + r) % 256, r
                if p % layout.pw == layout.w - 1 + P.PAD_LEFT:  # the right padding
                    vals[at + 1], rflat[at + 1] = vals[at], r
    assert taken.ravel().tolist() == [len(s) for s in coded.streams]
    out = layout.unpad(stack)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if transposed else out


# ---------------------------------------------------------------- inputs

def random_net(n_in: int, hidden: tuple[int, int], rng: np.random.Generator) -> P.IntegerNet:
    """Weights at the fixed-point format's full range (|w| up to 2**15), shifts that keep the
    activations alive; from_arrays proves the exactness bounds as for real weights."""
    h1, h2 = hidden
    net = P.IntegerNet(rng.integers(-P.WEIGHT_MAX, P.WEIGHT_MAX + 1, (h1, n_in)), rng.integers(-2**22, 2**22, h1), 18,
                       rng.integers(-P.WEIGHT_MAX, P.WEIGHT_MAX + 1, (h2, h1)), rng.integers(-2**28, 2**28, h2), 16,
                       rng.integers(-P.WEIGHT_MAX, P.WEIGHT_MAX + 1, h2), int(rng.integers(-2**22, 2**22)), 14)
    return P.IntegerNet.from_arrays(net.as_arrays("n_"), "n_")


def random_head(bound: np.ndarray, rng: np.random.Generator, large: bool) -> mlp.FittedHead:
    """Coefficients up to what the decoder's 2**52 check and the 5-byte varints admit (large),
    or fitted-head sized."""
    shift = int(rng.integers(1, 41))
    exact = (P.EXACT_LIMIT - (1 << shift) - 1) // max(int(bound.sum()), 1) - 1
    budget = min(exact, VARINT_MAX // 2 - 1) if large else 1 << 12
    return mlp.FittedHead(rng.integers(-budget, budget + 1, len(bound)), shift)


def random_energy(size: int, rng: np.random.Generator) -> np.ndarray:
    """Energy weights of either sign: small (contexts spread out) or as large as the encoder writes."""
    limit = mlp.ENERGY_WEIGHT_MAX if rng.random() < 0.3 else 64
    return rng.integers(-limit, limit + 1, size)


def make_image(kind: str, h: int, w: int, c: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":  # inputs near +-255
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if kind == "extremes":
        return np.where(rng.random((h, w, c)) < 0.5, 0, 255).astype(np.uint8)
    src = load_fixture(FIXTURE_NAMES[int(rng.integers(len(FIXTURE_NAMES)))])
    photo = np.tile(src, (h // src.shape[0] + 1, w // src.shape[1] + 1, 2))  # 6 channels, to take c
    y0, x0 = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
    return np.ascontiguousarray(photo[y0:y0 + h, x0:x0 + w, :c])


def codec_with(nets: list[P.IntegerNet] | None) -> mlp.MlpCodec:
    """The registered codec, or one whose predictor runs the given networks."""
    real = registry.get("mlp")
    if nets is None:
        return real
    codec = mlp.MlpCodec("mlp", real.method_id, real.weights)
    codec._predictor = object.__new__(mlp.Predictor)
    codec._predictor.nets, codec._predictor.model_id = nets, real.model_id()
    return codec


def random_nets(seed: int) -> list[P.IntegerNet]:
    rng = np.random.default_rng(seed)
    hidden = [(7, 5), (13, 3), (4, 9)][seed % 3]  # widths that are no multiple of the kernels' 4-wide steps
    return [random_net(P.input_size(n), hidden, rng) for n in range(3)]


# ---------------------------------------------------------------- the encoder's pass

@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["noise", "extremes", "crop"])
@pytest.mark.parametrize("nets_seed", [None, 0, 1, 2])
def test_encode_pass_equals_reference(channels, kind, nets_seed, weights_file):
    rng = np.random.default_rng(channels * 100 + len(kind) + (nets_seed or 0))
    codec = codec_with(None if nets_seed is None else random_nets(nets_seed))
    predictor = codec.predictor
    h, w = int(rng.integers(2, 40)), int(rng.integers(2, 40))
    image = make_image(kind, h, w, channels, rng)
    layout = mlp.Layout(h, w, int(rng.integers(1, min(4, h) + 1)))
    stack = layout.pad(image)
    flat = layout.interior()[2]
    priors = P.prior_channels(channels)
    for ch in P.coding_order(channels):
        n_priors = len(priors[ch])
        for large in (False, True):
            heads = [(mlp.HEAD_TRAINED, None)] + [
                (kind_, random_head(predictor.head_bound(kind_, n_priors), rng, large))
                for kind_ in (mlp.HEAD_NETWORK_FIT, mlp.HEAD_LINEAR_FIT)]
            for chosen in (heads, heads[2:]):  # with the network, and the linear head alone
                model = predictor.channel_model(ch, priors[ch], layout.pw, stack[0].size, chosen)
                got_res, got_grad = K.encode_pass(stack, flat, ch, model)
                want_res, want_grad = reference_pass(stack, flat, ch, priors[ch], predictor.nets[n_priors], chosen)
                assert np.array_equal(got_res, want_res), (ch, large, len(chosen))
                assert np.array_equal(got_grad, want_grad), (ch, large)


# ---------------------------------------------------------------- the decoder

def _encode(codec: mlp.MlpCodec, image: np.ndarray, predictor: str, energy: str = "auto") -> bytes:
    payload = codec._encode_predictive(image, predictor, energy)  # this mode, even where another is smaller
    assert payload[0] == mlp.MODE_PREDICTIVE
    if energy != "auto":
        assert mlp.predictive_flags(payload[1])[2] == (energy == "learned")
    return payload


def _check_decoders(codec: mlp.MlpCodec, image: np.ndarray, payload: bytes) -> None:
    h, w, c = image.shape
    header = Header(1, codec.model_id(), w, h, MODES[c])
    assert np.array_equal(codec.decode(header, [payload]), image)
    assert np.array_equal(reference_decode(codec, payload, image.shape), image)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("predictor", ["auto", "linear"])
@pytest.mark.parametrize("energy", ["fixed", "learned"])
@pytest.mark.parametrize("kind", ["noise", "crop"])
def test_kernel_decoder_equals_reference_decoder(channels, predictor, energy, kind, weights_file):
    rng = np.random.default_rng(channels + len(predictor) + len(kind) + len(energy))
    codec = codec_with(None)
    for h, w in [(2, 2), (1, 7), (9, 1), (int(rng.integers(3, 40)), int(rng.integers(3, 40)))]:
        image = make_image(kind, h, w, channels, rng)
        _check_decoders(codec, image, _encode(codec, image, predictor, energy if min(h, w) > 1 else "auto"))


@pytest.mark.parametrize("bands_height", [130, 260, 390, 520])  # 1 to 4 bands
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_kernel_decoder_every_band_count(bands_height, channels, weights_file):
    codec = codec_with(None)
    rng = np.random.default_rng(bands_height + channels)
    image = make_image("crop", bands_height, 21, channels, rng)
    image = np.ascontiguousarray(image.transpose(1, 0, 2))  # landscape: coded as it is, in bands
    payload = _encode(codec, image, "auto")
    assert mlp.predictive_flags(payload[1])[1] == mlp.Layout.band_count(image.shape[0])
    _check_decoders(codec, image, payload)


def _one_core(monkeypatch) -> None:
    monkeypatch.setattr(K, "usable_cores", lambda: 1)
    monkeypatch.setattr(symbol_streams, "usable_cores", lambda: 1)


def _two_cores(monkeypatch) -> None:
    monkeypatch.setattr(K, "usable_cores", lambda: 2)
    monkeypatch.setattr(symbol_streams, "usable_cores", lambda: 2)


THREADED_SHAPE = (280, 300)  # landscape (coded untransposed), past K.THREAD_MIN_SAMPLES


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_threads_change_no_byte_and_no_pixel(channels, weights_file, monkeypatch):
    """The encoder's slices, the streams and the decoder's channel pipeline on two threads:
    the same file as on one core, decoded to the same image either way."""
    codec = codec_with(None)
    image = make_image("crop", *THREADED_SHAPE, channels, np.random.default_rng(channels))
    header = Header(1, codec.model_id(), image.shape[1], image.shape[0], MODES[channels])
    _two_cores(monkeypatch)
    threaded = _encode(codec, image, "auto")
    assert np.array_equal(codec.decode(header, [threaded]), image)
    _one_core(monkeypatch)
    assert _encode(codec, image, "auto") == threaded
    assert np.array_equal(codec.decode(header, [threaded]), image)


@pytest.mark.parametrize("cut", [1, 64, 4096])
def test_a_channel_running_out_of_symbols_stops_the_pipeline(cut, weights_file, monkeypatch):
    """A stream cut short makes one channel's thread fail: the others stop, no hang."""
    _two_cores(monkeypatch)
    codec = codec_with(None)
    image = make_image("crop", *THREADED_SHAPE, 3, np.random.default_rng(5))
    payload = _encode(codec, image, "auto")
    transposed, bands, learned = mlp.predictive_flags(payload[1])
    assert not transposed
    coded = codec.parse_predictive(payload, image.shape, bands, learned)
    layout = coded.layout
    streams = [s.copy() for s in coded.streams]
    longest = int(np.argmax([len(s) for s in streams]))
    streams[longest] = streams[longest][:-cut]
    lengths = np.array([len(s) for s in streams], dtype=np.int64)
    ends = np.cumsum(lengths)
    stack = layout.pad(coded.image)
    models = [codec.predictor.channel_model(ch, coded.priors[ch], layout.pw, stack[0].size,
                                            [(coded.kind, coded.heads[ch])], coded.energy[ch]) for ch in coded.order]
    assert not K.decode_wavefronts(stack, layout.pad(coded.border_res), layout.w, layout.row0, layout.heights,
                                   coded.order, coded.thresholds, np.concatenate(streams), ends - lengths, ends, models)


def test_a_channel_that_raises_stops_the_pipeline():
    """An exception in one channel's thread reaches the caller; the channels after it stop
    waiting for it (no hang)."""
    pipeline = K._ChannelPipeline(3, 4)
    calls = []

    def decode_block(c: int, j: int) -> int:
        calls.append((c, j))
        if (c, j) == (0, 1):
            raise RuntimeError("broken")
        return 0

    with K.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(pipeline.run, c, decode_block) for c in range(3)]
        outcomes = [f.exception(timeout=10) for f in futures]
    assert isinstance(outcomes[0], RuntimeError) and outcomes[1:] == [None, None]
    assert pipeline.failed and (0, 2) not in calls and all(j < 1 for c, j in calls if c > 0)


@pytest.mark.parametrize("nets_seed", [0, 1, 2])
@pytest.mark.parametrize("predictor", ["trained", "network", "linear"])
def test_kernel_decoder_with_random_networks_and_heads(nets_seed, predictor, monkeypatch):
    """Each head kind, forced, with random networks and random heads as large as a reader admits."""
    codec = codec_with(random_nets(nets_seed))
    rng = np.random.default_rng(10 * nets_seed + len(predictor))
    monkeypatch.setattr(mlp, "fit_head", lambda features, target, bound: random_head(bound, rng, large=True))
    monkeypatch.setattr(mlp, "fit_energy", lambda features, residuals: random_energy(features.shape[1] + 1, rng))
    for channels in (1, 3, 4):
        image = make_image("crop", 30, 41, channels, rng)
        payload = _encode(codec, image, predictor, "learned")
        coded = codec.parse_predictive(payload, image.shape, *mlp.predictive_flags(payload[1])[1:])
        assert coded.kind == HEAD_KINDS[["trained", "network", "linear"].index(predictor)]
        _check_decoders(codec, image, payload)


# ---------------------------------------------------------------- crafted payloads

def _crafted(tail: bytes, shape=(20, 24, 3), extra_flags: int = 0) -> bytes:
    """A file whose predictive payload is a real one (noise: long enough for the work bound) up
    to its context parameters, then `tail`."""
    codec = registry.get("mlp")
    image = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    payload = codec._encode_predictive(image, "trained", "fixed")
    size, pos = read_varint(payload, 2)
    prefix = bytes([payload[0], payload[1] | extra_flags]) + payload[2:pos + size + 1]  # to the head kind
    header = container.Header(1, codec.model_id(), shape[1], shape[0], MODES[shape[2]])
    return container.Container(header, [prefix + tail]).to_bytes()


N_INTERIOR = 19 * 23  # of a 20x24 image, one band


def _stored_streams(*counts: int) -> bytes:
    return symbol_streams.encode([np.arange(n, dtype=np.uint8) if n < 256 else
                                  np.random.default_rng(n).integers(0, 256, n).astype(np.uint8) for n in counts])


def _huffman_lengths_cut_short() -> bytes:
    """Three photo-like streams (Huffman-coded), their code-length frame replaced by one too short."""
    rng = np.random.default_rng(1)
    streams = symbol_streams.encode([np.minimum(rng.geometric(0.3, N_INTERIOR), 255).astype(np.uint8)
                                     for _ in range(3)])
    pos = 0
    n, pos = read_varint(streams, pos)
    for _ in range(n):
        assert streams[pos] == symbol_streams.HUFFMAN
        _, pos = read_varint(streams, pos + 1)
    size, after = read_varint(streams, pos)
    short = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64))  # no size to check early
    return streams[:pos] + write_varint(len(short)) + short + streams[after + size:]


CRAFTED = {
    "no tables": (bytes([0]) + bytes(400), "bad table count"),
    "huge symbol count": (bytes([1]) + write_varint(3) + bytes([symbol_streams.STORED]) + write_varint(2**34)
                          + bytes(400), "more symbols than the image holds"),
    "too few streams": (bytes([2, 0, 0, 0]) + _stored_streams(N_INTERIOR, N_INTERIOR, N_INTERIOR),
                        "payload length does not match its streams"),
    "channel counts off by one": (bytes([1]) + _stored_streams(N_INTERIOR - 1, N_INTERIOR, N_INTERIOR + 1),
                                  "symbol count does not match the image"),
    "decreasing thresholds": (bytes([3, 9, 2, 1, 2, 1, 2]) + _stored_streams(*[N_INTERIOR, 0, 0] * 3),
                              "context thresholds decrease"),
    # Thresholds 0: every sample is in context 1, whose streams are empty.
    "a context runs dry": (bytes([2, 0, 0, 0]) + _stored_streams(*[N_INTERIOR, 0] * 3),
                           "context streams do not match the image"),
    "code-length table too short": (bytes([1]) + _huffman_lengths_cut_short(), "zstd frame holds fewer bytes"),
    "stream cut short": (bytes([1]) + _stored_streams(N_INTERIOR, N_INTERIOR, N_INTERIOR)[:-5],
                         "truncated stored stream"),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_predictive_payloads_are_one_clear_error(case, weights_file):
    tail, message = CRAFTED[case]
    with pytest.raises(CorruptFileError, match=f"corrupted mlp data \\({message}") as info:
        dcomp.decompress(_crafted(tail))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("flag", [1 << 4, 1 << 7])
def test_unknown_predictive_flags_are_refused(flag, weights_file):
    with pytest.raises(CorruptFileError, match="corrupted mlp data \\(bad predictive header"):
        dcomp.decompress(_crafted(bytes([1]) + _stored_streams(N_INTERIOR, N_INTERIOR, N_INTERIOR), extra_flags=flag))


def test_missing_energy_weights_are_one_clear_error(weights_file):
    """Flags bit 3 set, but the contexts start with K: the weights read run into the streams."""
    with pytest.raises(CorruptFileError, match="mlp"):
        dcomp.decompress(_crafted(bytes([1]) + _stored_streams(N_INTERIOR, N_INTERIOR, N_INTERIOR), extra_flags=8))


def test_a_huge_declared_image_is_refused_before_any_work(weights_file):
    """The payload of a 20x24 image relabelled 8000x8000: refused by the work bound at once."""
    data = container.parse(_crafted(bytes([1]) + _stored_streams(N_INTERIOR, N_INTERIOR, N_INTERIOR)))
    header = container.Header(1, data.header.model_id, 8000, 8000, "RGB")
    with pytest.raises(CorruptFileError, match="predictive payload too short for a 8000x8000 image"):
        dcomp.decompress(container.Container(header, data.sections).to_bytes())


# ---------------------------------------------------------------- the compile cache

CACHE_PROBE = """
import numpy as np
from dcomp import registry
from dcomp.container import Header
from dcomp.methods import mlp_kernel as K
codec = registry.get("mlp")
rng = np.random.default_rng(0)
image = (rng.integers(0, 40, (24, 30, 3)) + np.arange(30)[None, :, None] * 6).astype(np.uint8)
payload = codec._encode_predictive(image, "auto")
assert np.array_equal(codec.decode(Header(1, codec.model_id(), 30, 24, "RGB"), [payload]), image)
kernels = (K._encode_pass, K._decode_fronts)
print(sum(sum(k.stats.cache_hits.values()) for k in kernels), sum(sum(k.stats.cache_misses.values()) for k in kernels))
"""


def _probe_cache(env: dict) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True, env=env, check=True)
    hits, misses = map(int, out.stdout.split())
    return hits, misses


def test_a_second_process_loads_the_kernels_from_the_cache(weights_file):
    env = dict(os.environ)
    _probe_cache(env)  # compiles, unless this machine has already
    assert _probe_cache(env) == (2, 0)


@pytest.mark.slow
def test_an_empty_cache_compiles_once(tmp_path, weights_file):
    """With NUMBA_CACHE_DIR (also where a read-only install puts its cache when set): the first
    process compiles and stores both kernels, the second only loads them."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    assert _probe_cache(env) == (0, 2)
    assert list(tmp_path.rglob("*.nbi"))
    assert _probe_cache(env) == (2, 0)


def test_kernels_still_run_where_nothing_can_be_cached(monkeypatch):
    import numba

    real = numba.njit

    def refusing(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", refusing)
    with pytest.warns(RuntimeWarning, match="compile in every process"):
        doubled = K._jit(lambda a: 2 * a)
    assert doubled(21) == 42


# ---------------------------------------------------------------- files from before the kernel

# Written by the numpy decoder's release (commit fff53db, before the kernels and the per-image
# energy): kodim23_33x21 as RGB, and the top-left 30x24 of kodim08_40x40 as L.
OLD_RGB = (
    "3FoBAUDXRpsgFAFN+gOMgggCAIEBKLUv/SCfxQMAYkkbG7CpA/JyhnS0kCRJkuQhSZK3lKO2ES2RUsqdAnvf4d3W/lndNcXsbD+1"
    "qqnfP72ytU8vry4XZTplelvu7g8w9YTJMIiAPxk9Zzs4aWjS5oqVFKY5jLXu42GqkdnoJyr0bdvvOlfZxCIWkqggBAIARQWBCkAZ"
    "AAIWHRcGAbQCAcwCAbICAc4CAaoCAdYCYSi1L/1gAAK9AgDUAzMzM0RFBnAIAIAAM0QzREVWdmZ3B5h3CJAACQAAAAkAMjJTZIcI"
    "ADMzQ1RkZWd4YHh4cABwIiQ1UABoiAgIABdyBmYF16XaM6SpsiA1EUiZA4lXcAR//v9UV67epd3W3KF5iJgI/ggLRTE5hpMjOGE3"
    "6cz2CE83+BG6SWLLWG62NJMH4FT01qJ7LGw1qKg5Q7ZrpJrpE1mrMQHOEvPAFPvSuigLDIxSIHUDARxOoEClwQFTQDBhURtlI9Mb"
    "Lh0texWhN8xYI4vqy+BP16CvEhHLm8d1AKkBdjb6D8cnq+OIu70QX598Y9/bT/PnhxAT7eZ9Hvp8fnCjkqghrn+939qfTzjm80dB"
    "LOtmQEPXrWEq61rnmBjepFGCGNKyPMqnwqHYOWVKa1EqbZ/Wpao8xBrJmKGyQjsZ/AfE3H6e3MX7EMTsUJk21f/KQvvuWJZguIXR"
    "iB8kP5alz/nQP2DSIQMToh5DqFOFbnFtqDFNeZrOE+HIa3qWC5qMikKnMikIJHGGbbKHmJGVQ0FJ6NBdBaZktCyG8mnvUsBlJTz+"
    "k++D3jitJf70/DCy2ezLUIlUZ93d8feMemlb3XJNlmKe37uQj/7sUtXo4ydu/z8leOiGKhiccCY6DpB701FeWJrcaU16R864oBuL"
    "+qsfEpJL8NJ3AJwB1333/159/Pf37rrj2OV5AXB6HZd+g6XaFbZIJrAQzvghplgAJvpHTQ41EApqNg/kTYDxzo4P0INqg/4UVp2t"
    "UT5IXzSTD0qZomuE4fUbegiLd9LGBD0YATV7syGzmFy0ZvG2dkzA8dQDcF7N1bw+LuORnxNuwcjbtpg7lWYbW24bYOEh5vUbAjGM"
    "lsWVuKiaQlIGjU0OOda5dHCQVgEU5uwYKXuUvCvkF6aAUThkpIO4lgC7vqMqtAhFQLIC/BGgIA6YSAxaLYLL9HdsVaNlm00AlRoj"
    "gnH1L5qCgCqEViBUZTTj4eQsYyDJkQ2LQ/TXUXP4cPTvm2i4g7Lw3a/fQf/2neYJuRVwjf2GR6CPw5SSCE1Bl7PdP0FeOhYfXwve"
    "Hx3cV7XTOXVGI/eLg2tqRPsCQgvFPpkJTFz26Ph5QHdfRGnh8Y64QfnCGgDMvTIA3qdG5HAsib63EMr296Jj5M5SMgDKFjnH"
)
OLD_L = (
    "3FoBAUDXRpsdFwDb75r8lAQCAD4otS/9IDWpAQBK0woP7v4D/wEB/P0A/fwCKQX3Nxb+AgIGFNHwFvT49PT59AAE9gsQBgMBAPr9"
    "+fz/AAMp/wACKwIBzQIBzgJSKLUv/WAAAEUCAAKEDBGgqwOn6YdxSwe41heqzpBZUth2BPifn/hvdUPoq9thgmypVlKpHVMKIeWx"
    "rB10yBAiBwBT4wA4FwhsGckOXl0grQruC5oBay4GrUZxNNP1IJu/8Q3rjo54Iwgtygq6Qpy0p6RDWrpxfOocxG8BpdgI5aoDRC79"
    "rvFFrstBDiJb9wCpQRVF6JqBaRCJhwE1KGMdC7VE9glM5H4HJbnIKxt1o4Qru5swpYRlk1lD6egkloTp5JoyMjZ5dCk8v5oYJs9u"
    "1Dhp7J/Y28r85yuiPqDiPzyCAbnb1W6Q5/L7F46MoNgBRhLEwyMHiLo7RO09rns/lL9Gz8UgTE8q7eFd0Ej2UPTpSFjMWuvqgqxB"
    "sVhKy9EHiuQsKKKa423QN5DqbHTBcrtMBR40sMnk7XQIARAi4o63kyERPZYVAGZ1KtNcYKxERWFOKNM3EyQzWUGHGAnyWNWWkDzT"
    "VRjsham65N7ReaC21D5Scwe/BYNfT9SK6E05r5qQKTaEqqvZuLK5iClIRhNGWiYsClmYOgC1ifun+51z+d3f05/DVf/+3h5Zn+Yd"
    "2hr7M3pkwwhkr+N1Xt3N979PXx4+OP1A2MsA+Q=="
)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_files_written_before_the_kernels_still_decode(mode, weights_file):
    import base64

    data = base64.b64decode(OLD_RGB if mode == "RGB" else OLD_L)
    if container.parse(data).header.model_id != registry.get("mlp").model_id():
        pytest.skip("written with other mlp weights than the installed ones")
    assert container.parse(data).sections[0][0] == mlp.MODE_PREDICTIVE
    rgb = load_fixture("kodim23_33x21.png" if mode == "RGB" else "kodim08_40x40.png")
    from PIL import Image
    expected = rgb if mode == "RGB" else np.asarray(Image.fromarray(rgb).convert("L"))[:24, :30]
    assert np.array_equal(dcomp.decompress(data), expected)


def test_energy_weights_as_large_as_a_file_can_hold(weights_file):
    """Weights and thresholds scaled by one factor (to the 5-byte varints' range) select the
    same contexts, so the image must come back; the energies then need 64-bit integers."""
    codec = codec_with(None)
    image = make_image("crop", 40, 52, 3, np.random.default_rng(3))
    payload = _encode(codec, image, "auto", "learned")
    coded = codec.parse_predictive(payload, image.shape, *mlp.predictive_flags(payload[1])[1:])
    largest_weight = max(abs(int(v)) for w in coded.energy.values() for v in w)
    scale = min(2**33 // max(int(coded.thresholds.max()), 1), 2**33 // largest_weight)

    def contexts(factor: int) -> bytes:
        weights = b"".join(mlp._zz_varint(int(v) * factor) for ch in coded.order for v in coded.energy[ch])
        return weights + bytes([coded.thresholds.shape[1] + 1]) + b"".join(
            write_varint(int(t) * factor) for t in coded.thresholds.ravel())

    assert payload.count(contexts(1)) == 1
    assert int(coded.thresholds.max()) * scale > 2**32
    _check_decoders(codec, image, payload.replace(contexts(1), contexts(scale)))
