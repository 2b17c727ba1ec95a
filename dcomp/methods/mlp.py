"""`mlp`: lossless predictive coding with an integer MLP and context-adaptive Huffman codes.

Reads top to bottom: the predictor (a trained fixed-point network whose last layer the
encoder may refit per image), the entropy model (context energy quantized into per-image
bins, one Huffman table and one stream per bin), then compress and decompress. The
training loss lives with the training loop in `dcomp.train.mlp`.

Three payload modes, the encoder keeps the smallest (formats/SPEC.md):
stored (noise never grows), filtered (graphics: colour transform, PNG-like filter, zstd or
xz) and predictive (photographs). Decoding the predictive mode walks wavefronts
t = x + 2y: every pixel of a wavefront depends only on earlier wavefronts, so each is one
batched network evaluation per channel.
"""
from __future__ import annotations

import hashlib
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from dcomp.blas import many_threads
from dcomp.container import Header
from dcomp.varint import read_varint, write_varint
from dcomp.entropy import streams as symbol_streams
from dcomp.errors import CorruptFileError, WeightsError
from dcomp.methods import mlp_kernel as K
from dcomp.methods import mlp_predictor as P
from dcomp.methods import pixel_filters as F
from dcomp.methods.planes import MODE_FILTERED, MODE_PALETTE, MODE_PALETTE_PACKED, decode_filtered, decode_palette, \
    encode_filtered, encode_palette, filtered_cannot_win

MODE_STORED, MODE_PREDICTIVE = 0, 2  # mode 1 is planes.MODE_FILTERED
HEAD_TRAINED, HEAD_NETWORK_FIT, HEAD_LINEAR_FIT = 0, 1, 2
# The encoder's `predictor` option: the head kinds it tries (the smallest is kept).
PREDICTORS = {"auto": [HEAD_TRAINED, HEAD_NETWORK_FIT], "trained": [HEAD_TRAINED], "network": [HEAD_NETWORK_FIT],
              "linear": [HEAD_LINEAR_FIT]}
FIT_SAMPLES = 20000
COEFF_MAX = 1 << 20
TABLE_COUNTS = (1, 2, 4, 8, 12, 16, 24)
BAND_MIN_HEIGHT = 128
MAX_BANDS = 4
# The predictive mode's decoding work is about one unit per sample plus a fixed cost per
# wavefront and channel (as costly as ~64 samples when the format was set; the compiled
# kernel's is far smaller). A predictive payload must pay
# for it: at least one byte per PREDICTIVE_SAMPLES_PER_BYTE samples plus one byte per
# wavefront and channel (formats/SPEC.md). So decoding time is bounded by the file's size, not
# by the size its header claims; flatter or thinner images are coded in the filtered mode.
PREDICTIVE_SAMPLES_PER_BYTE = 64


def zigzag(r: np.ndarray) -> np.ndarray:
    """Signed residual in -128..127 to a byte symbol: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    r = r.astype(np.int16)
    return ((r << 1) ^ (r >> 15)).astype(np.uint8)  # r >> 15: 0 or -1, the sign


def _zz_varint(v: int) -> bytes:
    return write_varint(2 * v if v >= 0 else -2 * v - 1)


def _read_zz(data: bytes, pos: int) -> tuple[int, int]:
    v, pos = read_varint(data, pos, "mlp parameters")
    return (v >> 1) if not v & 1 else -(v >> 1) - 1, pos


class Layout:
    """The image cut into B horizontal bands, each coded like a separate image (own border
    row and column) and padded on its own; the padded bands are stacked vertically.

    Bands share wavefronts t = x + 2y_band, so decoding takes W + 2H/B steps instead of
    W + 2H: on a 768x512 image 4 bands cut the steps by 43%, for one extra border row per
    band (about +0.01 bit per sample)."""

    def __init__(self, height: int, width: int, bands: int):
        self.h, self.w, self.bands = height, width, bands
        self.pw = width + P.PAD_LEFT + P.PAD_RIGHT
        base, extra = divmod(height, bands)
        self.heights = [base + (b < extra) for b in range(bands)]
        self.starts = np.concatenate([[0], np.cumsum(self.heights)[:-1]]).astype(np.int64)
        # Padded row where each band's row 0 sits.
        self.row0 = self.starts + P.PAD_TOP * (np.arange(bands) + 1)

    @staticmethod
    def band_count(height: int) -> int:
        return max(1, min(MAX_BANDS, height // BAND_MIN_HEIGHT))

    def pad(self, image: np.ndarray) -> np.ndarray:
        """The bands of an (H, W, C) image, each as `mlp_predictor.pad_planes` pads it, stacked:
        filled in place (one copy of a 12-megapixel image, not three)."""
        c, left, w = image.shape[2], P.PAD_LEFT, self.w
        out = np.empty((c, len(self.heights) * P.PAD_TOP + self.h, self.pw), dtype=np.int32)
        for y0, hb, r0 in zip(self.starts, self.heights, self.row0):
            band = out[:, r0:r0 + hb]
            band[:, :, left:left + w] = np.moveaxis(image[y0:y0 + hb], 2, 0)
            band[:, :, :left] = band[:, :, left:left + 1]
            band[:, :, left + w:] = band[:, :, left + w - 1:left + w]
            out[:, r0 - P.PAD_TOP:r0] = band[:, :1]
        return out

    def unpad(self, stack: np.ndarray) -> np.ndarray:
        """The (H, W, C) uint8 image of a padded stack of decoded samples (0..255)."""
        out = np.empty((self.h, self.w, stack.shape[0]), dtype=np.uint8)
        for y0, hb, r0 in zip(self.starts, self.heights, self.row0):
            out[y0:y0 + hb] = np.moveaxis(stack[:, r0:r0 + hb, P.PAD_LEFT:P.PAD_LEFT + self.w], 0, 2)
        return out

    def interior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image rows, columns and padded flat positions of the interior samples (x >= 1 and
        y >= 1 within their band) in raster order, which keeps the encoder's gathers
        cache-friendly; and the permutation into decoding order (wavefront, band, y)."""
        # int32 throughout: a 12-megapixel image's index arrays stay at 48 MB each.
        n = sum(max(hb - 1, 0) for hb in self.heights) * max(self.w - 1, 0)
        ys, xs, flat, front = (np.empty(n, np.int32) for _ in range(4))
        x = np.arange(1, self.w, dtype=np.int32)
        at = 0
        for y0, hb, r0 in zip(self.starts, self.heights, self.row0):
            yl = np.arange(1, hb, dtype=np.int32)[:, None]
            part = slice(at, at + yl.size * x.size)
            shape = (yl.size, x.size)
            ys[part].reshape(shape)[:] = yl + np.int32(y0)
            xs[part].reshape(shape)[:] = x
            flat[part].reshape(shape)[:] = (yl + np.int32(r0)) * np.int32(self.pw) + (x + np.int32(P.PAD_LEFT))
            front[part].reshape(shape)[:] = 2 * yl + x
            at = part.stop
        # Raster order within each band, bands in turn: sorting that stably by the wavefront
        # alone leaves ties in (band, y) order. 16-bit keys sort by radix, in linear time.
        decode_order = np.argsort(front.astype(np.uint16) if self.w + 2 * max(self.heights) < 1 << 16 else front,
                                  kind="stable")
        return ys, xs, flat, decode_order


# ---------------------------------------------------------------- the predictor

class Predictor:
    """The trained networks, one per number of prior channels (0, 1, 2)."""

    def __init__(self, weights: Path):
        try:
            raw = Path(weights).read_bytes()
            with np.load(weights) as arrays:
                self.nets = [P.IntegerNet.from_arrays(arrays, f"n{i}_") for i in range(3)]
        except FileNotFoundError:
            raise WeightsError(f"mlp weights not found at {weights} (run `dcomp train mlp`)") from None
        except (OSError, KeyError, ValueError) as exc:
            raise WeightsError(f"mlp weights at {weights} are unreadable ({exc})") from None
        self.model_id = hashlib.sha256(raw).digest()[:4]

    def channel_model(self, channel: int, priors: list[int], pw: int, plane: int,
                      heads: list[tuple[int, "FittedHead | None"]],
                      energy_weights: np.ndarray | None = None) -> K.ChannelModel:
        """The compiled kernels' view of one channel's predictor, for each (head kind, head),
        with its context energy (the fixed one unless weights are given)."""
        net = self.nets[len(priors)]
        hidden = any(kind != HEAD_LINEAR_FIT for kind, _ in heads)
        if energy_weights is None:
            energy_weights = P.fixed_energy_weights(len(priors))
        return K.channel_model(net, channel, priors, pw, plane,
                               [self._head_terms(kind, head, len(priors)) for kind, head in heads], hidden,
                               energy_weights)

    def _head_terms(self, kind: int, head: "FittedHead | None", n_priors: int):
        """(coefficients over a2, over the inputs, constant, shift) of a head."""
        net = self.nets[n_priors]
        n_hidden, n_in = len(net.b2), P.input_size(n_priors)
        if kind == HEAD_TRAINED:
            return net.wh, np.zeros(n_in), net.bh, net.sh + P.ACT_BITS
        n_a = n_hidden if kind == HEAD_NETWORK_FIT else 0
        ca = head.coef[:n_a] if n_a else np.zeros(n_hidden)
        return ca, head.coef[n_a:n_a + n_in], int(head.coef[-1]), head.shift

    def head_size(self, kind: int, n_priors: int) -> int:
        n_in = P.input_size(n_priors)
        return n_in + 1 + (len(self.nets[n_priors].b2) if kind == HEAD_NETWORK_FIT else 0)

    def head_bound(self, kind: int, n_priors: int) -> np.ndarray:
        """Largest magnitude of each feature of a per-image head (the constant's is 1)."""
        n_in = P.input_size(n_priors)
        parts = [np.full(n_in, P.INPUT_MAX), [1]]
        if kind == HEAD_NETWORK_FIT:
            parts.insert(0, self.nets[n_priors].hidden_bounds())
        return np.concatenate(parts).astype(np.int64)


class FittedHead:
    """Integer coefficients over [hidden activations,] inputs and a constant, and a shift."""

    def __init__(self, coef: np.ndarray, shift: int):
        self.coef, self.shift = coef.astype(np.int64), shift

    def to_bytes(self) -> bytes:
        return (bytes([self.shift]) + write_varint(len(self.coef))
                + b"".join(_zz_varint(int(v)) for v in self.coef))

    @classmethod
    def from_bytes(cls, data: bytes, pos: int, size: int, bound: np.ndarray) -> tuple["FittedHead", int]:
        shift = data[pos]
        n, pos = read_varint(data, pos + 1, "mlp head")
        if n != size or not 1 <= shift <= 50:
            raise ValueError("bad head parameters")
        coef = []
        for _ in range(n):
            v, pos = _read_zz(data, pos)
            coef.append(v)
        head = cls(np.array(coef, dtype=object), shift)
        # Exactness: no partial sum may reach 2**52 (checked in Python integers).
        if sum(abs(c) * int(b) for c, b in zip(coef, bound)) + (1 << shift) >= P.EXACT_LIMIT:
            raise ValueError("head coefficients out of range")
        return head, pos


def fit_head(features: np.ndarray, target: np.ndarray, bound: np.ndarray) -> FittedHead:
    """Least absolute deviations (IRLS) for the per-image head, quantized to integers.

    L1 rather than L2: code length grows with log|error|, so a few outliers (edges) should
    not pull the fit away from the many small residuals."""
    scale = np.maximum(np.abs(features).max(axis=0), 1.0)
    fs = features / scale
    weights = np.ones(len(target))
    ridge = 1e-6 * len(target) * np.eye(fs.shape[1])
    for _ in range(3):
        fw = fs * weights[:, None]
        coef = np.linalg.solve(fw.T @ fs + ridge, fw.T @ target)
        weights = 1.0 / np.maximum(np.abs(target - fs @ coef), 1.0)
    coef = coef / scale
    # The largest shift (precision) whose worst-case sum stays exact.
    # The largest shift (precision) whose worst-case sum stays exact and whose coefficients
    # keep to COEFF_MAX: 20 bits of relative precision is far below the noise of the fit.
    worst = float(np.abs(coef) @ bound) + 1.0
    shift = int(np.clip(min(np.log2(P.EXACT_LIMIT / 4 / worst), np.log2(COEFF_MAX / max(np.abs(coef).max(), 1e-12))),
                        1, 40))
    return FittedHead(np.round(coef * 2.0**shift).astype(np.int64), shift)


# ---------------------------------------------------------------- the entropy model

ENERGY_CLIP = 4095  # energies above share the top bin; keeps the histograms small
# A per-image energy: 16 units per unit of expected |residual| resolve the thresholds finely
# within ENERGY_CLIP; weights beyond 2**15 would only come from a degenerate fit.
ENERGY_SCALE = 16
ENERGY_WEIGHT_MAX = 1 << 15
ENERGY_FIT_MIN_SAMPLES = 1024  # fewer: the weights would cost more than they save


def choose_bins(cum_joint: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """K-1 thresholds at equal-population quantiles of this image's context energy, and the
    estimated cost in bits (zero-order entropy per bin plus a table cost), from the joint
    histogram of (clipped energy, symbol) summed over energy (`cumulative_joint`)."""
    cum = cum_joint[1:].sum(axis=1)
    targets = cum[-1] * np.arange(1, k) / k
    th = np.unique(np.searchsorted(cum, targets, side="left"))
    edges = np.concatenate([[0], th + 1, [len(cum)]])
    per_bin = cum_joint[edges[1:]] - cum_joint[edges[:-1]]
    total = per_bin.sum(axis=1, keepdims=True)
    p = np.where(per_bin > 0, per_bin / np.maximum(total, 1), 1)
    bits = -(per_bin * np.log2(p)).sum() + 0.03 * cum[-1] + 2.5 * np.count_nonzero(per_bin)
    return th.astype(np.int64), float(bits)


def cumulative_joint(energy: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Row e + 1: how often each symbol occurs with a clipped energy <= e (row 0: none), so
    that any bin's histogram is a difference of two rows."""
    joint = K.joint_histogram(energy, symbols, ENERGY_CLIP)
    return np.concatenate([np.zeros((1, 256), np.int64), np.cumsum(joint, axis=0)])


def estimated_bits(hist: np.ndarray) -> float:
    """Estimated bits of symbols with this histogram coded with one table of their own."""
    hist = hist.astype(np.float64)
    n = hist.sum()
    p = np.where(hist > 0, hist / max(n, 1), 1)
    return float(-(hist * np.log2(p)).sum() + 0.03 * n + 2.5 * np.count_nonzero(hist))


def fit_energy(features: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Per-image energy weights (the constant last): least squares of |residual| on the
    features, in units of 1 / ENERGY_SCALE residual, rounded to integers."""
    design = np.concatenate([features.astype(np.float64), np.ones((len(features), 1))], axis=1)
    coef = np.linalg.lstsq(design, np.abs(residuals).astype(np.float64), rcond=None)[0]
    return np.clip(np.round(ENERGY_SCALE * coef), -ENERGY_WEIGHT_MAX, ENERGY_WEIGHT_MAX).astype(np.int64)


def _choose_contexts(joints: dict, n: int) -> tuple[float, int, dict]:
    """The table count K and each channel's thresholds with the lowest estimated cost (bits),
    from each channel's `cumulative_joint`."""
    best = None
    for k in TABLE_COUNTS:
        if k > 1 and n < 256 * k:
            break
        found = {ch: choose_bins(joints[ch], k) for ch in joints}
        cost = sum(bits for _, bits in found.values())
        if best is None or cost < best[0]:
            best = (cost, k, {ch: th for ch, (th, _) in found.items()})
    return best


# ---------------------------------------------------------------- compress

class MlpCodec:
    lossless = True
    qualities = None
    bitstream = "mlp"

    def __init__(self, name: str, method_id: int, weights: Path):
        self.name, self.method_id, self.weights = name, method_id, Path(weights)
        self._predictor: Predictor | None = None

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = Predictor(self.weights)
        return self._predictor

    def model_id(self) -> bytes:
        return self.predictor.model_id

    def encode(self, image: np.ndarray, quality: int | None = None, device: str = "cpu",
               predictor: str = "auto", energy: str = "auto") -> list[bytes]:
        """predictor: "auto" (trained or per-image fitted network head, whichever is smaller);
        for ablations "trained", "network" (that head alone) or "linear" (per-image least
        squares on the raw neighbourhood). energy: "auto" (the fixed or the per-image context
        energy, whichever is smaller), "fixed" or "learned" (per-image weights)."""
        candidates = [bytes([MODE_STORED]) + image.tobytes()]
        predictive = self._encode_predictive(image, predictor, energy)
        if _pays_for_its_work(predictive, image.shape):
            candidates.append(predictive)
        best = min(len(c) for c in candidates)
        if not filtered_cannot_win(image, best):
            candidates.append(encode_filtered(image, best))
        palette = encode_palette(image)
        if palette is not None:
            candidates.append(palette)
        return [min(candidates, key=len)]

    def _encode_predictive(self, image: np.ndarray, predictor: str = "auto", energy: str = "auto") -> bytes:
        # The encoder knows every pixel: its products are few and large, worth every core.
        with many_threads():
            return self._encode_predictive_all_known(image, predictor, energy)

    def _encode_predictive_all_known(self, image: np.ndarray, predictor: str, energy: str) -> bytes:
        # Decoding takes W + 2H wavefronts: walk portrait images transposed.
        transposed = image.shape[0] > image.shape[1]
        if transposed:
            image = np.ascontiguousarray(image.transpose(1, 0, 2))
        h, w, c = image.shape
        layout = Layout(h, w, Layout.band_count(h))
        order = P.coding_order(c)
        priors = P.prior_channels(c)
        border, border_res = _border_residuals(image, layout)
        stack = layout.pad(image)
        ys, xs, flat, decode_order = layout.interior()
        kinds = PREDICTORS[predictor]
        fit_kind = kinds[-1] if kinds[-1] != HEAD_TRAINED else None
        if len(flat) < 64:  # too few pixels to fit a head worth its bytes
            kinds = [HEAD_TRAINED]
        heads = {ch: {HEAD_TRAINED: None} for ch in order}
        if fit_kind in kinds:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(flat), min(len(flat), FIT_SAMPLES), replace=False))
            for ch in order:
                x, ref = P.gather_inputs(stack, flat[sample], ch, priors[ch])
                x = x.astype(np.float64)
                parts = [x, np.ones((len(x), 1))]
                if fit_kind == HEAD_NETWORK_FIT:
                    parts.insert(0, self.predictor.nets[len(priors[ch])].hidden(x))
                target = image[ys[sample], xs[sample], ch].astype(np.int64) - ref
                heads[ch][fit_kind] = fit_head(np.concatenate(parts, axis=1), target,
                                               self.predictor.head_bound(fit_kind, len(priors[ch])))
        # One pass over the image computes the residuals of every candidate head.
        # int16 and uint8 keep a 12-megapixel image's encoder well under 2 GB.
        residuals: dict[int, dict[int, np.ndarray]] = {kind: {} for kind in kinds}
        gradients = {}  # the gradient part of the context energy
        for ch in order:
            model = self.predictor.channel_model(ch, priors[ch], layout.pw, stack[0].size,
                                                 [(kind, heads[ch][kind]) for kind in kinds])
            res, gradients[ch] = K.encode_pass(stack, flat, ch, model)
            for kind, r in zip(kinds, res):
                residuals[kind][ch] = r

        def cost(kind):
            bits = sum(estimated_bits(K.residual_histogram(r)) for r in residuals[kind].values())
            return bits / 8 + (0 if kind == HEAD_TRAINED else sum(len(heads[ch][kind].to_bytes()) for ch in order))
        kind = min(kinds, key=cost)
        head_params = bytes([kind]) + b"".join(heads[ch][kind].to_bytes() for ch in order if kind != HEAD_TRAINED)
        learned, payload = self._entropy_code(layout, order, priors, ys, xs, flat, decode_order, residuals[kind],
                                              gradients, border_res, energy)
        flags = int(transposed) | (layout.bands - 1) << 1 | int(learned) << 3
        return bytes([MODE_PREDICTIVE, flags]) + write_varint(len(border)) + border + head_params + payload

    def _entropy_code(self, layout, order, priors, ys, xs, flat, decode_order, residuals, gradients,
                      border_res, energy: str) -> tuple[bool, bytes]:
        """Contexts and symbol streams; whether the energy is the per-image (learned) one.
        Both energies are scored by the estimated cost of their best binning."""
        res_plane = border_res.copy()
        for ch in order:
            res_plane[ys, xs, ch] = residuals[ch]
        res_stack = layout.pad(res_plane)
        symbols = {ch: zigzag(residuals[ch]) for ch in order}
        can_fit = len(flat) >= (1 if energy == "learned" else ENERGY_FIT_MIN_SAMPLES)
        candidates = {}  # per-image weights or not: each channel's energy weights
        if energy != "learned" or not can_fit:
            candidates[False] = {ch: P.fixed_energy_weights(len(priors[ch])) for ch in order}
        if energy != "fixed" and can_fit:
            sample = np.sort(np.random.default_rng(0).choice(len(flat), min(len(flat), FIT_SAMPLES), replace=False))
            candidates[True] = {ch: fit_energy(P.energy_features(res_stack, flat[sample], gradients[ch][sample], ch,
                                                                 priors[ch]), residuals[ch][sample])
                                for ch in order}

        def energy_of(ch, weights):
            """The channel's energies, clipped where no threshold can tell them apart (every
            threshold is at most ENERGY_CLIP + 1): 16 bits, 24 MB per 12-megapixel channel."""
            model = self.predictor.channel_model(ch, priors[ch], layout.pw, res_stack[0].size, [(HEAD_TRAINED, None)],
                                                 weights)
            return np.minimum(K.energies(res_stack, flat, gradients[ch], model), ENERGY_CLIP + 1).astype(np.uint16)

        best = None
        for learned, weights in candidates.items():
            energies = {ch: energy_of(ch, weights[ch]) for ch in order}
            joints = {ch: cumulative_joint(energies[ch], symbols[ch]) for ch in order}
            params = b"".join(_zz_varint(int(v)) for ch in order for v in weights[ch]) if learned else b""
            bits, k, bins = _choose_contexts(joints, len(flat))
            if best is None or bits + 8 * len(params) < best[0]:
                best = (bits + 8 * len(params), learned, params, k, bins, energies)
        _, learned, params, k, bins, energies = best
        params = bytearray(params + bytes([k]))
        streams = []
        for ch in order:
            th = bins[ch]
            # Thresholds can merge on images with few distinct energies; repeat the last one.
            th = np.concatenate([th, np.full(k - 1 - len(th), th[-1] if len(th) else 0, dtype=np.int64)])
            params += b"".join(write_varint(int(v)) for v in th)
            # Each (clipped) energy's context: how many thresholds are <= it.
            lut = np.searchsorted(th, np.arange(ENERGY_CLIP + 2), side="right").astype(np.int64)
            by_context = K.streams_by_context(symbols[ch], energies[ch], decode_order, lut)
            streams += by_context + [np.zeros(0, np.uint8)] * (k - len(by_context))
        return learned, bytes(params) + symbol_streams.encode(streams)

    # ------------------------------------------------------------ decompress

    def decode(self, header: Header, sections: list[bytes], device: str = "cpu") -> np.ndarray:
        if len(sections) != 1:
            raise CorruptFileError(f"truncated: method mlp needs 1 section, file has {len(sections)}")
        data = sections[0]
        shape = (header.height, header.width, header.channels)
        try:
            if not data:
                raise ValueError("empty payload")
            mode = data[0]
            if mode == MODE_STORED:
                if len(data) - 1 != np.prod(shape):
                    raise ValueError("stored payload has the wrong size")
                return np.frombuffer(data, dtype=np.uint8, offset=1).reshape(shape).copy()
            if mode == MODE_FILTERED:
                return decode_filtered(data, shape)
            if mode == MODE_PREDICTIVE:
                return self._decode_predictive(data, shape)
            if mode in (MODE_PALETTE, MODE_PALETTE_PACKED):
                return decode_palette(data, shape)
            raise ValueError(f"unknown mode {mode}")
        except (ValueError, IndexError, zstandard.ZstdError, lzma.LZMAError) as exc:
            raise CorruptFileError(f"corrupted mlp data ({exc})") from None

    def _decode_predictive(self, data: bytes, shape) -> np.ndarray:
        if len(data) < 2 or data[1] >> 4:
            raise ValueError("bad predictive header")
        if not _pays_for_its_work(data, shape):  # before anything of the image's size exists
            raise ValueError(f"predictive payload too short for a {shape[1]}x{shape[0]} image")
        transposed, bands, learned = predictive_flags(data[1])
        if transposed:
            return self._decode_wavefronts(data, (shape[1], shape[0], shape[2]), bands,
                                           learned).transpose(1, 0, 2).copy()
        return self._decode_wavefronts(data, shape, bands, learned)

    def _decode_wavefronts(self, data: bytes, shape, bands: int, learned: bool) -> np.ndarray:
        coded = self.parse_predictive(data, shape, bands, learned)
        layout, order = coded.layout, coded.order
        lengths = np.array([len(s) for s in coded.streams], dtype=np.int64)
        ends = np.cumsum(lengths)
        pool = np.concatenate(coded.streams + [np.zeros(0, np.uint8)])
        stack = layout.pad(coded.image)
        res = layout.pad(coded.border_res)
        models = [self.predictor.channel_model(ch, coded.priors[ch], layout.pw, stack[0].size,
                                               [(coded.kind, coded.heads[ch])], coded.energy[ch]) for ch in order]
        if not K.decode_wavefronts(stack, res, layout.w, layout.row0, layout.heights, order, coded.thresholds, pool,
                                   ends - lengths, ends, models):
            raise ValueError("context streams do not match the image")
        return layout.unpad(stack)

    def parse_predictive(self, data: bytes, shape, bands: int, learned: bool) -> "PredictivePayload":
        """Everything of a (possibly transposed) predictive payload but the wavefront walk,
        checked: the border decoded into the image, the head, the contexts (`learned`: with
        per-image energy weights) and the streams."""
        h, w, c = shape
        if bands > h:
            raise ValueError("more bands than rows")
        layout = Layout(h, w, bands)
        order = P.coding_order(c)
        priors = P.prior_channels(c)
        size, pos = read_varint(data, 2, "border")
        image = np.zeros(shape, dtype=np.uint8)
        border_res = _decode_border(data[pos:pos + size], image, layout)
        pos += size
        kind = data[pos]
        pos += 1
        if kind not in (HEAD_TRAINED, HEAD_NETWORK_FIT, HEAD_LINEAR_FIT):
            raise ValueError("unknown head kind")
        heads = {ch: None for ch in order}
        if kind != HEAD_TRAINED:
            for ch in order:
                n_priors = len(priors[ch])
                heads[ch], pos = FittedHead.from_bytes(data, pos, self.predictor.head_size(kind, n_priors),
                                                       self.predictor.head_bound(kind, n_priors))
        energy = {ch: P.fixed_energy_weights(len(priors[ch])) for ch in order}
        if learned:
            for ch in order:
                weights = []
                for _ in range(P.energy_size(len(priors[ch]))):
                    v, pos = _read_zz(data, pos)
                    weights.append(v)
                energy[ch] = np.array(weights, dtype=np.int64)
        k = data[pos]
        pos += 1
        if k == 0:
            raise ValueError("bad table count")
        thresholds = np.zeros((len(order), k - 1), np.int64)
        for i in range(len(order)):
            for j in range(k - 1):
                thresholds[i, j], pos = read_varint(data, pos, "mlp contexts")
        if np.any(np.diff(thresholds, axis=1) < 0):
            raise ValueError("context thresholds decrease")
        n_interior = sum(max(hb - 1, 0) for hb in layout.heights) * max(w - 1, 0)
        streams, pos = symbol_streams.decode(data, pos, n_interior * c)
        if pos != len(data) or len(streams) != k * len(order):
            raise ValueError("payload length does not match its streams")
        if np.any(np.array([len(s) for s in streams]).reshape(len(order), k).sum(axis=1) != n_interior):
            raise ValueError("symbol count does not match the image")
        return PredictivePayload(layout, order, priors, image, border_res, kind, heads, energy, thresholds, streams)


@dataclass
class PredictivePayload:
    layout: Layout
    order: list[int]
    priors: dict[int, list[int]]
    image: np.ndarray       # the border decoded, the interior still zero
    border_res: np.ndarray  # the border's residuals (the first interior samples' context)
    kind: int
    heads: dict             # channel -> FittedHead, or None for the trained head
    energy: dict            # channel -> its context energy's weights
    thresholds: np.ndarray  # (coded channels, K - 1)
    streams: list[np.ndarray]  # stream c * K + k: the c-th coded channel's symbols of context k


def predictive_flags(flags: int) -> tuple[bool, int, bool]:
    """(transposed, band count, per-image energy weights) from a predictive payload's flags byte."""
    return bool(flags & 1), (flags >> 1 & 3) + 1, bool(flags >> 3 & 1)


def _pays_for_its_work(payload: bytes, shape) -> bool:
    """Whether a predictive payload is long enough for the decoding work of its image
    (PREDICTIVE_SAMPLES_PER_BYTE); `shape` is the image's, the flags byte says how it is coded."""
    h, w, c = shape
    transposed, bands, _ = predictive_flags(payload[1])
    if transposed:
        h, w = w, h
    wavefronts = w + 2 * -(-h // bands)  # an upper bound: t = x + 2y within a band
    return PREDICTIVE_SAMPLES_PER_BYTE * (len(payload) - c * wavefronts) >= h * w * c


# ---------------------------------------------------------------- border and filtered modes

def _border_residuals(image: np.ndarray, layout: Layout) -> tuple[bytes, np.ndarray]:
    """Each band's row 0 (left filter) and column 0 (up filter) after the colour transform,
    zstd-packed together.

    Also returns the signed residual plane that the first interior row and column of each
    band read as context energy."""
    t = F.colour_forward(image)
    res = np.zeros(image.shape, dtype=np.int16)
    raws = []
    for y0, hb in zip(layout.starts, layout.heights):
        row = F.filter_forward(np.moveaxis(t[y0:y0 + 1, :, :], 2, 0), F.LEFT)  # (C, 1, W)
        col = F.filter_forward(np.moveaxis(t[y0:y0 + hb, 0:1, :], 2, 0), F.UP)  # (C, hb, 1)
        raws.append(np.concatenate([row.reshape(len(row), -1), col[:, 1:, 0]], axis=1))
        res[y0, :, :] = (row[:, 0, :].T.astype(np.int32) + 128) % 256 - 128
        res[y0 + 1:y0 + hb, 0, :] = (col[:, 1:, 0].T.astype(np.int32) + 128) % 256 - 128
    raw = np.concatenate(raws, axis=1)
    return zstandard.ZstdCompressor(level=19).compress(raw.tobytes()), res


def _decode_border(packed: bytes, image: np.ndarray, layout: Layout) -> np.ndarray:
    h, w, c = image.shape
    size = c * sum(w + hb - 1 for hb in layout.heights)
    raw = symbol_streams.zstd_decompress(packed, size).reshape(c, -1)
    res = np.zeros(image.shape, dtype=np.int16)
    pos = 0
    for y0, hb in zip(layout.starts, layout.heights):
        part = raw[:, pos:pos + w + hb - 1]
        pos += w + hb - 1
        row = F.filter_inverse(part[:, None, :w], F.LEFT)[:, 0, :]  # (C, W)
        # Column 0 starts at the corner sample, which row 0 already holds.
        col = F.filter_inverse(np.concatenate([row[:, :1], part[:, w:]], axis=1)[:, :, None], F.UP)[:, :, 0]
        image[y0, :, :] = F.colour_inverse(row.T[None])[0]
        image[y0:y0 + hb, 0, :] = F.colour_inverse(col.T[:, None, :])[:, 0]
        res[y0, :, :] = (part[:, :w].T.astype(np.int32) + 128) % 256 - 128
        res[y0 + 1:y0 + hb, 0, :] = (part[:, w:].T.astype(np.int32) + 128) % 256 - 128
    return res
