"""`cnn-ae` and `cnn-ae-ft`: a convolutional autoencoder with a context-adaptive learned prior.

Reads top to bottom: the transforms, the entropy model, the loss, then compress and
decompress.

Transforms. The analysis is a stride-8 convolution (space-to-depth plus a 1x1 convolution,
192 latent channels per 8x8 block) followed by a residual block of 3x3 convolutions across
neighbouring blocks; the synthesis mirrors it with two residual blocks and a small
full-resolution residual filter. The stride-8 convolution starts as an orthonormal colour
transform times the 8x8 DCT and the quantizer gains start from the JPEG tables, so training
starts from a working transform codec and every CPU step is spent improving it (a randomly
initialized autoencoder needs far more steps than this machine has). Residual branches
start at zero.

Rate control. One model serves all eight qualities: per quality, a learned gain per latent
channel before rounding and an inverse gain after it, each trained with its own lambda.

Entropy model. Latent channels are coded in eight groups of rising frequency. A symbol's
table is chosen by (quality, channel, bin), where the bin is log2 of an integer activity
computed from already decoded groups around its block, so the decoder computes the same
bins exactly with integer arithmetic. Each table is a discretized two-part Laplace mixture,
turned into integer frequencies once at export and stored with the weights. The DC channels
are coded as differences from their left (first column: upper) neighbour.

cnn-ae-ft is the same network fine-tuned on high-resolution photo crops; its encoder also
refines the latents of each image with a few gradient steps on the image's own
rate-distortion loss before the final rounding (the decoder does not change).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np

from dcomp.container import Header, read_varint, write_varint
from dcomp.entropy import ans
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError

BLOCK = 8
LATENT = 3 * BLOCK * BLOCK
QUALITIES = 8
LAMBDAS = (0.0008, 0.00145, 0.0026, 0.0047, 0.0085, 0.0154, 0.0277, 0.05)  # D in MSE of 0..255 pixels
JPEG_INIT_QUALITY = (8, 15, 25, 40, 55, 70, 82, 92)
BINS = 12
TILE = 128   # latent positions per tile side (1024 pixels)
HALO = 6     # latent positions of context around a tile: more than the receptive field

# Annex K tables of the JPEG standard, used only to initialize the quantizer gains.
_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_JPEG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64)


def frequency_diagonal() -> np.ndarray:
    """u + v of each latent channel (colour-major, then 8x8 frequency), 0..14."""
    u, v = np.divmod(np.arange(BLOCK * BLOCK), BLOCK)
    return np.tile(u + v, 3)


# Coding groups: each diagonal range of the 8x8 spectrum, all three colour components.
GROUP_DIAGONALS = ((0,), (1,), (2,), (3,), (4,), (5, 6), (7, 8, 9), tuple(range(10, 15)))
DC_CHANNELS = np.array([0, 64, 128])


def channel_groups() -> list[np.ndarray]:
    d = frequency_diagonal()
    return [np.flatnonzero(np.isin(d, diag)) for diag in GROUP_DIAGONALS]


def initial_transform() -> np.ndarray:
    """192x192 orthonormal matrix: opponent colour transform times the 2-D DCT-II."""
    n = np.arange(BLOCK)
    dct = np.sqrt(2.0 / BLOCK) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * BLOCK))
    dct[0] /= np.sqrt(2.0)
    colour = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    return np.kron(colour, np.kron(dct, dct))


def initial_log_gains() -> np.ndarray:
    """(QUALITIES, 192): 255 / JPEG quantizer step at a matching JPEG quality."""
    out = np.zeros((QUALITIES, LATENT))
    for q, jq in enumerate(JPEG_INIT_QUALITY):
        scale = 5000.0 / jq if jq < 50 else 200.0 - 2 * jq
        luma = np.clip(np.floor((_JPEG_LUMA * scale + 50) / 100), 1, 255)
        chroma = np.clip(np.floor((_JPEG_CHROMA * scale + 50) / 100), 1, 255)
        out[q] = np.log(255.0 / np.concatenate([luma, chroma, chroma]))
    return out


# ---------------------------------------------------------------- transforms

def _torch():
    import torch
    return torch


def build_model(analysis_hidden: int = 64, synthesis_hidden: int = 96, post_hidden: int = 32):
    """The network as a torch module (built on demand so that importing this file is cheap)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Residual(nn.Module):
        """y + f(y) with 3x3 convolutions across neighbouring blocks; f starts at zero."""

        def __init__(self, channels: int, hidden: int):
            super().__init__()
            self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
            self.mid = nn.Conv2d(hidden, hidden, 1)
            self.out = nn.Conv2d(hidden, channels, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, y):
            return y + self.out(F.gelu(self.mid(F.gelu(self.inp(y)))))

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            basis = torch.tensor(initial_transform(), dtype=torch.float32)
            self.block_analysis = nn.Conv2d(LATENT, LATENT, 1)
            self.block_synthesis = nn.Conv2d(LATENT, LATENT, 1)
            with torch.no_grad():
                self.block_analysis.weight.copy_(basis[:, :, None, None])
                self.block_synthesis.weight.copy_(basis.T[:, :, None, None])
                self.block_analysis.bias.zero_()
                self.block_synthesis.bias.zero_()
            self.analysis_residual = Residual(LATENT, analysis_hidden)
            self.synthesis_residuals = nn.Sequential(Residual(LATENT, synthesis_hidden),
                                                     Residual(LATENT, synthesis_hidden))
            self.post_in = nn.Conv2d(3, post_hidden, 3, padding=1)
            self.post_out = nn.Conv2d(post_hidden, 3, 3, padding=1)
            nn.init.zeros_(self.post_out.weight)
            nn.init.zeros_(self.post_out.bias)
            gains = torch.tensor(initial_log_gains(), dtype=torch.float32)
            self.log_gain = nn.Parameter(gains.clone())
            self.log_inverse_gain = nn.Parameter(-gains.clone())
            # Entropy model: a two-part Laplace mixture per (quality, channel, bin).
            self.log_scales = nn.Parameter(torch.tensor([math.log(0.3), math.log(3.0)]).repeat(
                QUALITIES, LATENT, BINS, 1))
            self.mix_logit = nn.Parameter(torch.zeros(QUALITIES, LATENT, BINS))

        def analysis(self, x):
            """(N, 3, H, W) in 0..1, H and W multiples of 8 -> (N, 192, H/8, W/8)."""
            return self.analysis_residual(self.block_analysis(F.pixel_unshuffle(x - 0.5, BLOCK)))

        def synthesis(self, y):
            """Dequantized latents -> (N, 3, 8h, 8w), not yet clamped."""
            x = F.pixel_shuffle(self.block_synthesis(self.synthesis_residuals(y)), BLOCK) + 0.5
            return x + self.post_out(F.gelu(self.post_in(x)))

        def gains(self, q):
            """Per-item gains and inverse gains, (N, 192, 1, 1), for quality indices q (N,)."""
            return (torch.exp(self.log_gain[q])[:, :, None, None],
                    torch.exp(self.log_inverse_gain[q])[:, :, None, None])

    return Autoencoder()


# ---------------------------------------------------------------- entropy model

def _box3_int(a: np.ndarray) -> np.ndarray:
    """3x3 box sum with zeros outside, exact on int64 arrays (..., h, w)."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _bins_from_activity(activity: np.ndarray) -> np.ndarray:
    """Bin = bit length of the activity, capped: 0, 1, 2-3, 4-7, ..."""
    a = np.minimum(activity, (1 << (BINS - 1)) - 1).astype(np.int64)
    bits = np.zeros_like(a)
    for k in range(BINS - 1):
        bits += a >= (1 << k)
    return bits


def _dc_activity(y: np.ndarray) -> np.ndarray:
    """Sum over DC channels of |right - here| + |below - here| (int64, (..., h, w))."""
    dc = y[..., DC_CHANNELS, :, :]
    out = np.zeros(dc.shape[:-3] + dc.shape[-2:], dtype=np.int64)
    out[..., :, :-1] += np.abs(np.diff(dc, axis=-1)).sum(axis=-3)
    out[..., :-1, :] += np.abs(np.diff(dc, axis=-2)).sum(axis=-3)
    return out


def _group_bins(y: np.ndarray):
    """Yields each coding group's (..., h, w) bins in turn, each computed from y as it stands
    when asked: a decoder fills in a group (and turns the DC residuals into values) before
    asking for the next one's."""
    groups = channel_groups()
    yield np.zeros(y.shape[:-3] + y.shape[-2:], dtype=np.int64)  # group 0 (DC): one bin
    running = _dc_activity(y)
    for g in range(1, len(groups)):
        ac = [c for c in groups[g - 1] if c not in DC_CHANNELS]
        if ac:
            running = running + np.abs(y[..., ac, :, :]).sum(axis=-3)
        yield _bins_from_activity(_box3_int(running))


def context_bins(y: np.ndarray) -> list[np.ndarray]:
    """Per coding group, the (..., h, w) bin of each block, from the earlier groups only.

    y: integer latents (..., 192, h, w). Group 0 (DC) has one bin.
    """
    return list(_group_bins(y))


def context_bins_torch(y_int):
    """The same bins as context_bins, for a torch batch of rounded latents (N, 192, h, w)."""
    torch = _torch()
    F = torch.nn.functional
    groups = channel_groups()
    a = y_int.detach().to(torch.float64)  # integers: float64 sums are exact here
    dc = a[:, DC_CHANNELS]
    running = torch.zeros_like(dc[:, 0])
    running[:, :, :-1] += torch.abs(dc[:, :, :, 1:] - dc[:, :, :, :-1]).sum(1)
    running[:, :-1, :] += torch.abs(dc[:, :, 1:, :] - dc[:, :, :-1, :]).sum(1)
    channel_bin = torch.zeros(a.shape, dtype=torch.int64, device=a.device)
    ones = torch.ones(1, 1, 3, 3, dtype=a.dtype, device=a.device)
    for g in range(1, len(groups)):
        ac = [c for c in groups[g - 1] if c not in DC_CHANNELS]
        if ac:
            running = running + torch.abs(a[:, ac]).sum(1)
        act = F.conv2d(running[:, None], ones, padding=1)[:, 0]
        act = torch.clamp(act, max=(1 << (BINS - 1)) - 1)
        b = torch.zeros_like(act, dtype=torch.int64)
        for k in range(BINS - 1):
            b += (act >= (1 << k)).to(torch.int64)
        channel_bin[:, groups[g]] = b[:, None]
    return channel_bin


def dc_residual(y: np.ndarray) -> np.ndarray:
    """DC channels (..., 3, h, w) minus their left neighbour (first column: the one above)."""
    r = y.copy()
    r[..., :, 1:] = y[..., :, 1:] - y[..., :, :-1]
    r[..., 1:, 0] = y[..., 1:, 0] - y[..., :-1, 0]
    return r


def dc_from_residual(r: np.ndarray) -> np.ndarray:
    y = r.copy()
    y[..., :, 0] = np.cumsum(r[..., :, 0], axis=-1)
    return np.cumsum(y, axis=-1)


def _dc_prediction_torch(y_int):
    """What dc_residual subtracts, for rounded torch latents (N, 3, h, w)."""
    torch = _torch()
    pred = torch.zeros_like(y_int)
    pred[..., :, 1:] = y_int[..., :, :-1]
    pred[..., 1:, 0] = y_int[..., :-1, 0]
    return pred


# ---------------------------------------------------------------- loss

def latent_bits(model, v, y_int, q):
    """Bits of each latent, (N, 192, h, w), under the context model.

    v: the values being coded (noisy or rounded scaled latents); y_int: their rounded values,
    from which contexts and the DC prediction come (no gradient); q: (N,) quality indices.
    """
    torch = _torch()
    from dcomp.entropy.laplace import likelihood
    bins = context_bins_torch(y_int)
    dc = torch.as_tensor(DC_CHANNELS, device=v.device)
    coded = v.clone()
    coded[:, dc] = v[:, dc] - _dc_prediction_torch(y_int[:, dc]).detach()
    n, c, h, w = v.shape
    qi = q[:, None, None, None].expand(n, c, h, w)
    ci = torch.arange(c, device=v.device)[None, :, None, None].expand(n, c, h, w)
    log_scales = model.log_scales[qi, ci, bins]
    mix = model.mix_logit[qi, ci, bins]
    return -torch.log2(likelihood(coded, log_scales, mix))


def rate_distortion(model, x, q, noise: bool = True):
    """Per-item (loss, bits per pixel, MSE in 0..255 units) for images x (N,3,H,W) in 0..1.

    Rate uses additive uniform noise in place of rounding; the synthesis sees rounded values
    with a straight-through gradient, as at test time.
    """
    torch = _torch()
    gain, inverse_gain = model.gains(q)
    v = model.analysis(x) * gain
    y_int = torch.round(v).detach()
    noisy = v + (torch.rand_like(v) - 0.5) if noise else y_int
    bits = latent_bits(model, noisy, y_int, q).sum((1, 2, 3))
    rounded = v + (y_int - v).detach()
    x_hat = model.synthesis(rounded * inverse_gain)
    mse = ((x_hat - x) ** 2).mean((1, 2, 3)) * 255.0 ** 2
    bpp = bits / (x.shape[2] * x.shape[3])
    lam = torch.as_tensor(LAMBDAS, device=x.device)[q]
    return lam * mse + bpp, bpp, mse


# ---------------------------------------------------------------- weights

def save_weights(model, path: Path, meta: dict) -> None:
    """Float parameters plus the integer coding tables, as .npz (no pickle)."""
    from dcomp.entropy.laplace import build_tables
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    freq, offsets = build_tables(state["log_scales"], state["mix_logit"])
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"param/" + k: v for k, v in state.items()}, table_freq=freq, table_offsets=offsets,
             meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8))
    Path(path).write_bytes(buf.getvalue())


class Weights:
    """A loaded weights file: the torch model (built lazily) and the integer tables."""

    def __init__(self, path: Path):
        path = Path(path)
        try:
            raw = path.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                self.params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
                self.table_freq = z["table_freq"].astype(np.uint32)
                self.table_offsets = z["table_offsets"].astype(np.int64)
                self.meta = json.loads(bytes(z["meta"]).decode())
        except FileNotFoundError:
            raise WeightsError(f"weights not found: {path} (train them with `dcomp train`)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"cannot read weights {path}: {exc}") from None
        if len(self.table_offsets) != QUALITIES * LATENT * BINS + 1 or self.table_offsets[-1] != len(self.table_freq):
            raise WeightsError(f"weights {path} have malformed coding tables")
        self.model_id = hashlib.sha256(raw).digest()[:4]
        self.block_cost = _block_costs(self.table_freq, self.table_offsets)
        self._models: dict = {}
        self._net = None

    def net(self, device: str):
        torch = _torch()
        if self._net is None:
            net = build_model(**self.meta.get("architecture", {}))
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self.params.items()})
            net.eval()
            net.requires_grad_(False)  # coding never trains; refinement differentiates the latents only
            self._net = net
        return self._net.to(device)

    def table(self, index: int) -> np.ndarray:
        return self.table_freq[self.table_offsets[index]:self.table_offsets[index + 1]]

    def coding_model(self, index: int):
        """constriction model of table `index`, from its exact integer frequencies."""
        if index not in self._models:
            import constriction
            freq = self.table(index).astype(np.float64)  # integers below 2**24: exact in float64
            self._models[index] = constriction.stream.model.Categorical(freq, perfect=False)
        return self._models[index]


def table_index(q: int, channel: int, bin_: int) -> int:
    return (q * LATENT + channel) * BINS + bin_


def _block_costs(freq: np.ndarray, offsets: np.ndarray) -> list[int]:
    """Per quality index, a floor on what one block's 192 symbols cost (ans.cost_floors
    units): over the channels, the sum of each one's smallest floor over the bins (a reader
    checks a stream's length before it knows any bin)."""
    floors = ans.cost_floors(freq, offsets).reshape(QUALITIES, LATENT, BINS)
    return [int(v) for v in floors.min(axis=2).sum(axis=1)]


def _stream_too_short(weights: Weights, q: int, blocks: int, n_words: int) -> bool:
    return ans.too_short(blocks * weights.block_cost[q], n_words)


# ---------------------------------------------------------------- compress

def _escape_bytes(values: list[int]) -> bytes:
    return b"".join(write_varint(2 * v if v >= 0 else -2 * v - 1) for v in values)


def _bin_spans(bins: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Raster positions ordered by (bin, position), and (bin, start, end) of each non-empty
    bin in that order: the runs of one table each, as encoder and decoder both walk them."""
    flat = bins.ravel()
    counts = np.bincount(flat, minlength=BINS)
    ends = np.cumsum(counts)
    return np.argsort(flat, kind="stable"), [(b, int(ends[b] - n), int(ends[b])) for b, n in enumerate(counts) if n]


def encode_latents(weights: Weights, y: np.ndarray, q: int) -> bytes:
    """Integer latents (192, h, w) of quality index q to one payload: escapes, then ANS words.

    Symbols are coded group by group, and within a group channel by channel and bin by bin,
    each run of symbols with one table: the decoder knows every run's table and length
    before it reads it.
    """
    import constriction
    y = y.astype(np.int64)
    coded = y.copy()
    coded[DC_CHANNELS] = dc_residual(y[DC_CHANNELS])
    runs: list[tuple[int, np.ndarray]] = []
    for group, bins in zip(channel_groups(), context_bins(y)):
        order, spans = _bin_spans(bins)
        for c in group:
            values = coded[c].ravel()[order]
            runs.extend((table_index(q, c, b), values[start:end]) for b, start, end in spans)
    escapes: list[int] = []
    symbols = []
    for t, values in runs:
        k = (len(weights.table(t)) - 2) // 2
        s = values + k
        outside = np.abs(values) > k
        if outside.any():
            escapes.extend(int(v) for v in values[outside])
            s = np.where(outside, 2 * k + 1, s)
        symbols.append(s.astype(np.int32))
    coder = constriction.stream.stack.AnsCoder()
    for (t, _), s in zip(reversed(runs), reversed(symbols)):
        coder.encode_reverse(s, weights.coding_model(t))
    words = coder.get_compressed()
    if _stream_too_short(weights, q, y.shape[1] * y.shape[2], len(words)):
        # Only if nearly every latent is its table's least likely value -K, the symbol that
        # costs nothing in an empty coder: the reader would refuse the file, so never write it.
        raise UnsupportedError("cannot code these latents: their stream is shorter than the format allows")
    return write_varint(len(escapes)) + _escape_bytes(escapes) + words.astype("<u4").tobytes()


def decode_latents(weights: Weights, payload: bytes, q: int, h: int, w: int) -> np.ndarray:
    """The inverse of encode_latents; CorruptFileError on anything inconsistent."""
    import constriction
    try:
        n_escapes, pos = read_varint(payload, 0)
        escapes = []
        for _ in range(n_escapes):
            z, pos = read_varint(payload, pos)
            escapes.append(-(z >> 1) - 1 if z & 1 else z >> 1)
    except CorruptFileError as exc:
        raise CorruptFileError(f"corrupted latent stream ({exc})") from None
    words = payload[pos:]
    if len(words) % 4 or n_escapes > LATENT * h * w:
        raise CorruptFileError("corrupted latent stream (bad length)")
    if _stream_too_short(weights, q, h * w, len(words) // 4):
        raise CorruptFileError(f"corrupted latent stream (too short for {h}x{w} blocks)")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    except ValueError as exc:
        raise CorruptFileError(f"corrupted latent stream ({exc})") from None
    y = np.zeros((LATENT, h, w), dtype=np.int64)
    escape_iter = iter(escapes)
    bins_by_group = _group_bins(y)
    for g, group in enumerate(channel_groups()):
        if g == 1:  # the later groups' contexts read the DC values, not their residuals
            y[DC_CHANNELS] = dc_from_residual(y[DC_CHANNELS])
        order, spans = _bin_spans(next(bins_by_group))
        for c in group:
            values = np.empty(h * w, dtype=np.int64)
            for b, start, end in spans:
                t = table_index(q, c, b)
                k = (len(weights.table(t)) - 2) // 2
                s = coder.decode(weights.coding_model(t), end - start).astype(np.int64) - k
                outside = np.flatnonzero(s == k + 1)
                if len(outside):
                    try:
                        s[outside] = [next(escape_iter) for _ in outside]
                    except StopIteration:
                        raise CorruptFileError("corrupted latent stream (missing escapes)") from None
                values[order[start:end]] = s
            y[c] = values.reshape(h, w)
    if next(escape_iter, None) is not None or not coder.is_empty():
        raise CorruptFileError("corrupted latent stream (data left over)")
    return y


def _resolve_device(device: str) -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError("--device cuda: no CUDA device is available")
    return device


def _tiled(fn, src, scale_in: int, scale_out: int, grid: tuple[int, int], channels: int):
    """fn over a (1, C, H, W) tensor in tiles of TILE latent positions with HALO around each.

    The halo is wider than the receptive field, so tiles meet without seams: each output
    tile is computed from all the input it depends on, exactly as the whole image would be.
    """
    torch = _torch()
    h, w = grid
    if h <= TILE + HALO and w <= TILE + HALO:
        return fn(src)
    out = torch.empty(1, channels, h * scale_out, w * scale_out, device=src.device)
    for i0 in range(0, h, TILE):
        for j0 in range(0, w, TILE):
            i1, j1 = min(h, i0 + TILE), min(w, j0 + TILE)
            a0, a1, b0, b1 = max(0, i0 - HALO), min(h, i1 + HALO), max(0, j0 - HALO), min(w, j1 + HALO)
            piece = fn(src[:, :, a0 * scale_in:a1 * scale_in, b0 * scale_in:b1 * scale_in])
            out[:, :, i0 * scale_out:i1 * scale_out, j0 * scale_out:j1 * scale_out] = \
                piece[:, :, (i0 - a0) * scale_out:(i1 - a0) * scale_out, (j0 - b0) * scale_out:(j1 - b0) * scale_out]
    return out


REFINE_MAX_POSITIONS = 128 * 128  # latent positions (1 Mpixel): larger images are not refined
REFINE_ITERATIONS = 3
REFINE_STEPS = (0.15, 0.3)  # tried along the gradient, as the largest change of any latent


def _true_cost(net, x, v, q: int, inverse_gain, lam: float) -> float:
    """lambda * MSE + bits per pixel of the latents v once rounded: what coding them costs."""
    torch = _torch()
    y = torch.round(v)
    with torch.no_grad():
        x_hat = net.synthesis(y * inverse_gain)
        bits = latent_bits(net, y, y, torch.tensor([q], device=x.device)).sum()
        return float(lam * ((x_hat - x) ** 2).mean() + bits / (x.shape[2] * x.shape[3]))


def refine_latents(net, x, v, q: int, iterations: int = REFINE_ITERATIONS):
    """Gradient descent with a line search on the scaled latents v of one image, on the
    image's own lambda * MSE + bits, then rounding.

    The gradient is taken with rounding seen straight-through by the synthesis and the rate
    measured on the unrounded values; each step tries a few lengths and keeps the one whose
    *rounded* latents cost least, and the search stops when none improves. So the result is
    never worse than plain rounding. (Adam on the latents, tried first, moves every latent
    by its step size, so the many near-zero ones cross rounding boundaries at random: it
    gained half as much at the same cost.)
    """
    torch = _torch()
    qi = torch.tensor([q], device=x.device)
    _, inverse_gain = net.gains(qi)
    lam = LAMBDAS[q] * 255.0 ** 2
    npix = x.shape[2] * x.shape[3]
    current = v.detach()
    cost = _true_cost(net, x, current, q, inverse_gain, lam)
    for _ in range(iterations):
        trial = current.clone().requires_grad_(True)
        rounded = torch.round(trial).detach()
        straight = trial + (rounded - trial).detach()
        loss = lam * ((net.synthesis(straight * inverse_gain) - x) ** 2).mean() \
            + latent_bits(net, trial, rounded, qi).sum() / npix
        grad, = torch.autograd.grad(loss, trial)
        grad = grad / grad.abs().max().clamp_min(1e-12)
        step_cost, step = min((_true_cost(net, x, current - s * grad, q, inverse_gain, lam), s)
                              for s in REFINE_STEPS)
        if step_cost >= cost:
            break
        current, cost = (current - step * grad).detach(), step_cost
    return torch.round(current)


class CnnAeCodec:
    name = "cnn-ae"
    method_id = 2
    lossless = False
    qualities = range(1, QUALITIES + 1)
    refine_iterations = 0

    def __init__(self, weights: Path):
        self.path = Path(weights)
        self._weights: Weights | None = None

    @property
    def weights(self) -> Weights:
        if self._weights is None:
            self._weights = Weights(self.path)
        return self._weights

    def model_id(self) -> bytes:
        return self.weights.model_id

    def latents(self, image: np.ndarray, quality: int, device: str = "auto") -> np.ndarray:
        """(H, W, C) uint8 image to its integer latents (192, ceil(H/8), ceil(W/8))."""
        torch = _torch()
        dev = _resolve_device(device)
        net = self.weights.net(dev)
        rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
        h, w = rgb.shape[:2]
        gh, gw = -(-h // BLOCK), -(-w // BLOCK)
        # Edge padding: the padded area costs few bits and is cropped off after decoding.
        padded = np.pad(rgb, ((0, gh * BLOCK - h), (0, gw * BLOCK - w), (0, 0)), mode="edge")
        x = torch.from_numpy(np.ascontiguousarray(padded)).to(dev).permute(2, 0, 1)[None].float() / 255.0
        q = quality - 1
        gain, _ = net.gains(torch.tensor([q], device=dev))
        with torch.no_grad():
            v = _tiled(net.analysis, x, BLOCK, 1, (gh, gw), LATENT) * gain
        if self.refine_iterations and gh * gw <= REFINE_MAX_POSITIONS:
            with torch.enable_grad():
                y = refine_latents(net, x, v, q, self.refine_iterations)
        else:
            y = torch.round(v)
        return y[0].to("cpu", torch.int64).numpy()

    def encode(self, image: np.ndarray, quality: int | None, device: str = "auto") -> list[bytes]:
        if quality not in self.qualities:
            raise UnsupportedError(f"{self.name} needs a quality in 1..{QUALITIES}")
        sections = [encode_latents(self.weights, self.latents(image, quality, device), quality - 1)]
        if image.shape[2] == 4:
            from dcomp.methods.mlp import encode_plane_lossless
            sections.append(encode_plane_lossless(image[:, :, 3:]))
        return sections

    def decode(self, header: Header, sections: list[bytes], device: str = "auto") -> np.ndarray:
        torch = _torch()
        expected = 2 if header.channels == 4 else 1
        if len(sections) != expected:
            raise CorruptFileError(f"truncated: {self.name} needs {expected} section(s), file has {len(sections)}")
        if header.quality not in self.qualities:
            raise CorruptFileError(f"quality {header.quality} out of range for {self.name}")
        h, w = header.height, header.width
        gh, gw = -(-h // BLOCK), -(-w // BLOCK)
        y = decode_latents(self.weights, sections[0], header.quality - 1, gh, gw)
        alpha = None
        if header.channels == 4:  # checked before the synthesis, the costly part
            from dcomp.methods.mlp import decode_plane_lossless
            alpha = decode_plane_lossless(sections[1], (h, w, 1))
        dev = _resolve_device(device)
        net = self.weights.net(dev)
        _, inverse_gain = net.gains(torch.tensor([header.quality - 1], device=dev))
        with torch.no_grad():
            v = torch.from_numpy(y).to(dev).float()[None] * inverse_gain
            x = _tiled(net.synthesis, v, 1, BLOCK, (gh, gw), 3)
            rgb = torch.clamp(torch.round(x[0, :, :h, :w] * 255.0), 0, 255).to("cpu", torch.uint8)
        rgb = rgb.permute(1, 2, 0).numpy()
        if header.channels == 1:
            return np.round(rgb.astype(np.float32).mean(axis=2, keepdims=True)).astype(np.uint8)
        if alpha is not None:
            return np.concatenate([rgb, alpha], axis=2)
        return np.ascontiguousarray(rgb)


class CnnAeFtCodec(CnnAeCodec):
    """The fine-tuned network, with per-image latent refinement at encode time."""
    name = "cnn-ae-ft"
    method_id = 3
    refine_iterations = REFINE_ITERATIONS
