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
from pathlib import Path

import numpy as np
import zstandard

from dcomp.blas import many_threads
from dcomp.container import Header
from dcomp.varint import read_varint, write_varint
from dcomp.entropy import streams as symbol_streams
from dcomp.errors import CorruptFileError, WeightsError
from dcomp.methods import mlp_predictor as P
from dcomp.methods import pixel_filters as F
from dcomp.methods.planes import MODE_FILTERED, MODE_PALETTE, decode_filtered, decode_palette, encode_filtered, \
    encode_palette

MODE_STORED, MODE_PREDICTIVE = 0, 2  # mode 1 is planes.MODE_FILTERED
HEAD_TRAINED, HEAD_NETWORK_FIT, HEAD_LINEAR_FIT = 0, 1, 2
CHUNK = 1 << 16  # pixels per batch when the whole image is known (encoder): bounds memory
FIT_SAMPLES = 20000
COEFF_MAX = 1 << 20
TABLE_COUNTS = (1, 2, 4, 8, 12, 16, 24)
BAND_MIN_HEIGHT = 128
MAX_BANDS = 4
# The predictive mode's decoding work is about one unit per sample plus one batch of numpy
# calls (as costly as ~64 samples) per wavefront and channel. A predictive payload must pay
# for it: at least one byte per PREDICTIVE_SAMPLES_PER_BYTE samples plus one byte per
# wavefront and channel (formats/SPEC.md). So decoding time is bounded by the file's size, not
# by the size its header claims; flatter or thinner images are coded in the filtered mode.
PREDICTIVE_SAMPLES_PER_BYTE = 64


def zigzag(r: np.ndarray) -> np.ndarray:
    """Signed residual in -128..127 to a byte symbol: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    r = r.astype(np.int16)
    return np.where(r >= 0, 2 * r, -2 * r - 1).astype(np.uint8)


def unzigzag(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.int64)
    return np.where(s & 1, -(s >> 1) - 1, s >> 1)


UNZIGZAG = unzigzag(np.arange(256))


def wrap_residual(x: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """x - pred folded into -128..127: the decoder adds it back mod 256."""
    return ((x.astype(np.int64) - pred + 128) & 255) - 128


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
        return np.concatenate([P.pad_planes(image[y0:y0 + hb]) for y0, hb in zip(self.starts, self.heights)], axis=1)

    def unpad(self, stack: np.ndarray) -> np.ndarray:
        rows = np.concatenate([np.arange(r, r + hb) for r, hb in zip(self.row0, self.heights)])
        return np.ascontiguousarray(np.moveaxis(stack[:, rows, P.PAD_LEFT:P.PAD_LEFT + self.w], 0, 2))

    def interior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image rows, columns and padded flat positions of the interior samples (x >= 1 and
        y >= 1 within their band) in raster order, which keeps the encoder's gathers
        cache-friendly; and the permutation into decoding order (wavefront, band, y)."""
        parts = []
        for b, hb in enumerate(self.heights):
            yl, xs = np.mgrid[1:hb, 1:self.w].astype(np.int32)
            parts.append((yl.ravel(), xs.ravel(), np.full(yl.size, b, dtype=np.int32)))
        yl, xs, band = (np.concatenate(v) for v in zip(*parts))
        decode_order = np.lexsort((yl, band, xs + 2 * yl))
        # int32 throughout: a 12-megapixel image's index arrays stay at 48 MB each.
        flat = (self.row0.astype(np.int32)[band] + yl) * np.int32(self.pw) + xs + np.int32(P.PAD_LEFT)
        return self.starts.astype(np.int32)[band] + yl, xs, flat, decode_order

    def wavefronts(self):
        """Padded flat positions of each wavefront's samples (bands in order, y ascending),
        and a mask of those in the last column."""
        for t in range(3, (self.w - 1) + 2 * (max(self.heights) - 1) + 1):
            flats, last = [], []
            for b, hb in enumerate(self.heights):
                y_lo = max(1, -((self.w - 1 - t) // 2))
                y_hi = min(hb - 1, (t - 1) // 2)
                if y_lo <= y_hi:
                    yl = np.arange(y_lo, y_hi + 1)
                    xs = t - 2 * yl
                    flats.append((self.row0[b] + yl) * self.pw + xs + P.PAD_LEFT)
                    last.append(xs == self.w - 1)
            if flats:
                yield np.concatenate(flats), np.concatenate(last)


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

    def offsets(self, stack: np.ndarray, flat: np.ndarray, channel: int, priors: list[int],
                heads: list) -> tuple[np.ndarray, list, np.ndarray]:
        """The reference, for each (head kind, coefficients) the predicted offset from it, and
        the inputs (the context energy reuses them)."""
        x, ref = P.gather_inputs(stack, flat, channel, priors)
        x = x.astype(np.float64)
        net = self.nets[len(priors)]
        a2 = net.hidden(x) if any(kind != HEAD_LINEAR_FIT for kind, _ in heads) else None
        out = []
        for kind, head in heads:
            if kind == HEAD_TRAINED:
                out.append(net.head(a2))
            else:
                parts = [a2, x] if kind == HEAD_NETWORK_FIT else [x]
                out.append(P.linear_head(parts, *head.blocks(parts)))
        return ref, out, x

    def wavefront_kernel(self, channel: int, priors: list[int], kind: int, head: "FittedHead | None"):
        """The decoder's per-wavefront computation with its small products fused: the first
        layer, the gradient energy and the head's input part share one product with x.
        Returns f(stack, flat) -> (prediction, gradient energy). Same integer sums as
        `offsets` and `gradient_energy`, so the same results."""
        net = self.nets[len(priors)]
        n_in = P.input_size(len(priors))
        diff = P.gradient_energy_matrix(channel, priors)
        hidden = kind != HEAD_LINEAR_FIT
        cols = ([net.w1t] if hidden else []) + [diff]
        if kind != HEAD_TRAINED:
            coef = head.coef
            n_hidden = len(net.b2) if hidden else 0
            ca = coef[:n_hidden].astype(np.float64)
            cols.append(coef[n_hidden:n_hidden + n_in].astype(np.float64)[:, None])
            const = float(int(coef[-1]) + (1 << (head.shift - 1)))
            scale = 2.0 ** -head.shift
        fused = np.concatenate(cols, axis=1)
        h1 = net.w1t.shape[1] if hidden else 0

        def step(stack: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x, ref = P.gather_inputs(stack, flat, channel, priors)
            z = x @ fused
            grad = np.abs(z[:, h1:h1 + 3]).sum(axis=1)
            if hidden:
                a1 = z[:, :h1] + net.b1f
                P._relu_shift(a1, net.s1 - P.ACT_BITS)
                a2 = a1 @ net.w2t
                a2 += net.b2f
                P._relu_shift(a2, net.s2)
            if kind == HEAD_TRAINED:
                offset = net.head(a2)
            else:
                acc = z[:, -1] + const
                if hidden:
                    acc += a2 @ ca
                offset = np.floor(acc * scale).astype(np.int64)
            return np.minimum(np.maximum(ref + offset, 0), 255), grad

        return step

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
        self._blocks: tuple | None = None

    def blocks(self, parts: list[np.ndarray]) -> tuple[list[np.ndarray], int, int]:
        if self._blocks is None:  # the decoder asks once per wavefront: split once
            sizes = np.cumsum([p.shape[1] for p in parts])[:-1]
            self._blocks = ([c.astype(np.float64) for c in np.split(self.coef[:-1], sizes)],
                            int(self.coef[-1]), self.shift)
        return self._blocks

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


def choose_bins(joint: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """K-1 thresholds at equal-population quantiles of this image's context energy, and the
    estimated cost in bits (zero-order entropy per bin plus a table cost), from the joint
    histogram of (clipped energy, symbol)."""
    cum = np.cumsum(joint.sum(axis=1))
    targets = cum[-1] * np.arange(1, k) / k
    th = np.unique(np.searchsorted(cum, targets, side="left"))
    edges = np.concatenate([[0], th + 1, [len(cum)]])
    per_bin = np.add.reduceat(joint, edges[:-1], axis=0)
    total = per_bin.sum(axis=1, keepdims=True)
    p = np.where(per_bin > 0, per_bin / np.maximum(total, 1), 1)
    bits = -(per_bin * np.log2(p)).sum() + 0.03 * cum[-1] + 2.5 * np.count_nonzero(per_bin)
    return th.astype(np.int64), float(bits)


def estimated_bits(symbols: np.ndarray, ctx: np.ndarray, k: int) -> float:
    hist = np.bincount(ctx.astype(np.int64) * 256 + symbols, minlength=256 * k).reshape(k, 256).astype(np.float64)
    total = hist.sum(axis=1, keepdims=True)
    p = np.where(hist > 0, hist / np.maximum(total, 1), 1)
    return float(-(hist * np.log2(p)).sum() + 0.03 * len(symbols) + 2.5 * np.count_nonzero(hist))


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
               predictor: str = "auto") -> list[bytes]:
        """predictor: "auto" (trained or per-image fitted network head, whichever is smaller)
        or "linear" (per-image least squares on the raw neighbourhood: the ablation)."""
        candidates = [bytes([MODE_STORED]) + image.tobytes()]
        predictive = self._encode_predictive(image, predictor)
        if _pays_for_its_work(predictive, image.shape):
            candidates.append(predictive)
        best = min(len(c) for c in candidates)
        candidates.append(encode_filtered(image, best))
        palette = encode_palette(image)
        if palette is not None:
            candidates.append(palette)
        return [min(candidates, key=len)]

    def _encode_predictive(self, image: np.ndarray, predictor: str) -> bytes:
        # The encoder knows every pixel: its products are few and large, worth every core.
        with many_threads():
            return self._encode_predictive_all_known(image, predictor)

    def _encode_predictive_all_known(self, image: np.ndarray, predictor: str) -> bytes:
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
        fit_kind = HEAD_LINEAR_FIT if predictor == "linear" else HEAD_NETWORK_FIT
        kinds = [fit_kind] if predictor == "linear" else [HEAD_TRAINED, fit_kind]
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
        residuals = {kind: {ch: np.zeros(len(flat), np.int16) for ch in order} for kind in kinds}
        gradients = {ch: np.zeros(len(flat), np.int32) for ch in order}  # half of the context energy
        for ch in order:
            for s in _chunks(len(flat)):
                ref, offsets, x = self.predictor.offsets(stack, flat[s], ch, priors[ch],
                                                         [(kind, heads[ch][kind]) for kind in kinds])
                gradients[ch][s] = P.gradient_energy(x, ch, priors[ch])
                for kind, offset in zip(kinds, offsets):
                    residuals[kind][ch][s] = wrap_residual(image[ys[s], xs[s], ch], np.clip(ref + offset, 0, 255))

        def cost(kind):
            bits = sum(estimated_bits(zigzag(r), np.zeros(len(r), np.int32), 1) for r in residuals[kind].values())
            return bits / 8 + (0 if kind == HEAD_TRAINED else sum(len(heads[ch][kind].to_bytes()) for ch in order))
        kind = min(kinds, key=cost)
        head_params = bytes([kind]) + b"".join(heads[ch][kind].to_bytes() for ch in order if kind != HEAD_TRAINED)
        payload = self._entropy_code(layout, order, priors, ys, xs, flat, decode_order, residuals[kind],
                                     gradients, border_res)
        flags = int(transposed) | (layout.bands - 1) << 1
        return bytes([MODE_PREDICTIVE, flags]) + write_varint(len(border)) + border + head_params + payload

    def _entropy_code(self, layout, order, priors, ys, xs, flat, decode_order, residuals, gradients,
                      border_res) -> bytes:
        res_plane = border_res.copy()
        for ch in order:
            res_plane[ys, xs, ch] = residuals[ch]
        res_stack = layout.pad(res_plane)

        def energy(ch, s):
            return gradients[ch][s] + P.residual_energy(res_stack, flat[s], ch, priors[ch]).astype(np.int32)
        energies = {ch: np.concatenate([energy(ch, s) for s in _chunks(len(flat))]) if len(flat)
                    else np.zeros(0, np.int32) for ch in order}
        symbols = {ch: zigzag(residuals[ch]) for ch in order}
        joints = {ch: np.bincount(np.minimum(energies[ch], ENERGY_CLIP).astype(np.int64) * 256 + symbols[ch],
                                  minlength=(ENERGY_CLIP + 1) * 256).reshape(ENERGY_CLIP + 1, 256)
                  for ch in order}
        best = None
        for k in TABLE_COUNTS:
            if k > 1 and len(flat) < 256 * k:
                break
            found = {ch: choose_bins(joints[ch], k) for ch in order}
            cost = sum(bits for _, bits in found.values())
            if best is None or cost < best[0]:
                best = (cost, k, {ch: th for ch, (th, _) in found.items()})
        _, k, bins = best
        params = bytearray([k])
        streams = []
        for ch in order:
            th = bins[ch]
            # Thresholds can merge on images with few distinct energies; repeat the last one.
            th = np.concatenate([th, np.full(k - 1 - len(th), th[-1] if len(th) else 0, dtype=np.int64)])
            params += b"".join(write_varint(int(v)) for v in th)
            ctx = np.searchsorted(th, energies[ch][decode_order], side="right")
            sym = symbols[ch][decode_order]
            streams += [sym[ctx == j] for j in range(k)]
        return bytes(params) + symbol_streams.encode(streams)

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
            if mode == MODE_PALETTE:
                return decode_palette(data, shape)
            raise ValueError(f"unknown mode {mode}")
        except (ValueError, IndexError, zstandard.ZstdError, lzma.LZMAError) as exc:
            raise CorruptFileError(f"corrupted mlp data ({exc})") from None

    def _decode_predictive(self, data: bytes, shape) -> np.ndarray:
        if len(data) < 2 or data[1] >> 3:
            raise ValueError("bad predictive header")
        if not _pays_for_its_work(data, shape):  # before anything of the image's size exists
            raise ValueError(f"predictive payload too short for a {shape[1]}x{shape[0]} image")
        transposed, bands = data[1] & 1, (data[1] >> 1) + 1
        if transposed:
            return self._decode_wavefronts(data, (shape[1], shape[0], shape[2]), bands).transpose(1, 0, 2).copy()
        return self._decode_wavefronts(data, shape, bands)

    def _decode_wavefronts(self, data: bytes, shape, bands: int) -> np.ndarray:
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
        k = data[pos]
        pos += 1
        if k == 0:
            raise ValueError("bad table count")
        thresholds = {}
        for ch in order:
            th = []
            for _ in range(k - 1):
                v, pos = read_varint(data, pos, "mlp contexts")
                th.append(v)
            thresholds[ch] = np.array(th, dtype=np.int64)
        n_interior = sum(max(hb - 1, 0) for hb in layout.heights) * max(w - 1, 0)
        streams, pos = symbol_streams.decode(data, pos, n_interior * c)
        if pos != len(data) or len(streams) != k * len(order):
            raise ValueError("payload length does not match its streams")
        pools, starts, ends, ptrs = {}, {}, {}, {}
        for i, ch in enumerate(order):
            lengths = np.array([len(s) for s in streams[i * k:(i + 1) * k]], dtype=np.int64)
            if lengths.sum() != n_interior:
                raise ValueError("symbol count does not match the image")
            pools[ch] = np.concatenate(streams[i * k:(i + 1) * k] + [np.zeros(1, np.uint8)])
            ends[ch] = np.cumsum(lengths)
            starts[ch] = ends[ch] - lengths
            ptrs[ch] = starts[ch].copy()

        stack = layout.pad(image)
        res = layout.pad(border_res)
        plane = stack[0].size
        flat_vals, flat_res = stack.reshape(-1), res.reshape(-1)
        kernels = {ch: self.predictor.wavefront_kernel(ch, priors[ch], kind, heads[ch]) for ch in order}
        for flat, last in layout.wavefronts():
            for ch in order:
                pred, grad = kernels[ch](stack, flat)
                ctx = np.searchsorted(thresholds[ch], grad + P.residual_energy(res, flat, ch, priors[ch]), side="right")
                # Each context's stream hands out its next symbols, in wavefront order.
                counts = np.bincount(ctx, minlength=k)
                sort = np.argsort(ctx, kind="stable")
                sorted_ctx = ctx[sort]
                take = np.empty(len(ctx), dtype=np.int64)
                take[sort] = ptrs[ch][sorted_ctx] + np.arange(len(ctx)) - (np.cumsum(counts) - counts)[sorted_ctx]
                ptrs[ch] += counts
                r = UNZIGZAG[pools[ch][np.minimum(take, len(pools[ch]) - 1)]]
                values = (pred + r) & 255
                at = flat + ch * plane
                flat_vals[at] = values
                flat_res[at] = r
                if last.any():  # the right padding copies the last column as it is decoded
                    flat_vals[at[last] + 1] = values[last]
                    flat_res[at[last] + 1] = r[last]
        for ch in order:
            if np.any(ptrs[ch] != ends[ch]):
                raise ValueError("context streams do not match the image")
        return layout.unpad(stack).astype(np.uint8)


def _pays_for_its_work(payload: bytes, shape) -> bool:
    """Whether a predictive payload is long enough for the decoding work of its image
    (PREDICTIVE_SAMPLES_PER_BYTE); `shape` is the image's, the flags byte says how it is coded."""
    h, w, c = shape
    if payload[1] & 1:  # transposed
        h, w = w, h
    bands = (payload[1] >> 1 & 3) + 1
    wavefronts = w + 2 * -(-h // bands)  # an upper bound: t = x + 2y within a band
    return PREDICTIVE_SAMPLES_PER_BYTE * (len(payload) - c * wavefronts) >= h * w * c


def _chunks(n: int):
    for start in range(0, n, CHUNK):
        yield slice(start, min(n, start + CHUNK))


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
