"""The first-generation backbone of `cnn-ae` and `cnn-ae-ft`, retired: a block-transform
autoencoder with a context-adaptive learned prior.

Kept for two jobs: files written with its weights still decode (the registry finds those
weights in weights/legacy by the model id a file names), and cnn-rnn-ae's trainer starts from
its transforms. New files are written by dcomp.methods.cnn_ae.

Reads top to bottom: the transforms, the entropy model, the rate-distortion forward and its
loss, the per-image refinement of cnn-ae-ft, the weights, then the codecs.

Transforms. The analysis is a stride-8 convolution (space-to-depth plus a 1x1 convolution,
192 latent channels per 8x8 block) followed by a residual block of 3x3 convolutions across
neighbouring blocks; the synthesis mirrors it with two residual blocks and a small
full-resolution residual filter. The block transforms start as the colour DCT and the
quantizer gains from the JPEG tables (dcomp.layers), so training starts from a working
transform codec.

Rate control. One model serves all eight qualities: per quality, a learned gain per latent
channel before rounding and an inverse gain after it, each trained with its own lambda.

Entropy model. dcomp.entropy.context_model, laid out here: eight coding groups of rising
frequency (diagonals of the 8x8 spectrum, all three colour components), 12 context bins.

cnn-ae-ft is the same network fine-tuned on high-resolution photo crops; its encoder also
refines the latents of each image with a few gradient steps on the image's own
rate-distortion loss before the final rounding (the decoder does not change).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcomp import weights as W
from dcomp.entropy.context_model import ContextEntropyModel, ContextLayout
from dcomp.errors import WeightsError
from dcomp.layers import BLOCK, BLOCK_LATENTS, BlockTransforms, QualityGains, jpeg_log_gains
from dcomp.methods.lossy import LossyCodec, image_tensor, resolve_device, tiled

QUALITIES = 8
LAMBDAS = (0.0008, 0.00145, 0.0026, 0.0047, 0.0085, 0.0154, 0.0277, 0.05)  # D in MSE of 0..255 pixels
JPEG_INIT_QUALITY = (8, 15, 25, 40, 55, 70, 82, 92)
BINS = 12
HALO = 6  # latent positions of context around a tile: more than the receptive field
GROUP_DIAGONALS = ((0,), (1,), (2,), (3,), (4,), (5, 6), (7, 8, 9), tuple(range(10, 15)))
DC_CHANNELS = (0, 64, 128)


def frequency_diagonal() -> np.ndarray:
    """u + v of each latent channel (colour-major, then 8x8 frequency), 0..14."""
    u, v = np.divmod(np.arange(BLOCK * BLOCK), BLOCK)
    return np.tile(u + v, 3)


def channel_groups() -> tuple[tuple[int, ...], ...]:
    d = frequency_diagonal()
    return tuple(tuple(int(c) for c in np.flatnonzero(np.isin(d, diag))) for diag in GROUP_DIAGONALS)


LAYOUT = ContextLayout(groups=channel_groups(), dc_channels=DC_CHANNELS, bins=BINS, qualities=QUALITIES,
                       channels=BLOCK_LATENTS)


# ---------------------------------------------------------------- transforms and entropy model

class BlockAutoencoder(BlockTransforms):
    def __init__(self, analysis_hidden: int = 64, synthesis_hidden: int = 96, post_hidden: int = 32):
        super().__init__(analysis_hidden, synthesis_hidden, post_hidden)
        self.gains = QualityGains(jpeg_log_gains(JPEG_INIT_QUALITY))
        self.entropy = ContextEntropyModel(LAYOUT)

    # ------------------------------------------------------------ the rate-distortion forward

    def forward(self, x: torch.Tensor, q: torch.Tensor, rate_on: str = "noise"):
        """Images x (N, 3, H, W) in 0..1 at quality indices q (N,) -> (x_hat, bits per item)."""
        gain, _ = self.gains(q)
        return self.code(self.analysis(x) * gain, q, rate_on)

    def code(self, v: torch.Tensor, q: torch.Tensor, rate_on: str = "noise"):
        """Scaled latents v -> (x_hat, bits per item).

        The synthesis sees v rounded, with a straight-through gradient; the rate is measured on
        v plus uniform noise ("noise", training), on v itself ("latents", refinement's
        gradient) or on v rounded ("rounded", what coding costs).
        """
        _, inverse_gain = self.gains(q)
        y = torch.round(v).detach()
        coded = {"noise": lambda: v + (torch.rand_like(v) - 0.5), "latents": lambda: v, "rounded": lambda: y}[rate_on]()
        bits = self.entropy.bits(coded, y, q).sum((1, 2, 3))
        rounded = y if rate_on == "rounded" else v + (y - v).detach()
        return self.synthesis(rounded * inverse_gain), bits


def rd_loss(x: torch.Tensor, x_hat: torch.Tensor, bits: torch.Tensor, q: torch.Tensor):
    """Per item (lambda * MSE + bits per pixel, bits per pixel, MSE), MSE in 0..255 units."""
    mse = ((x_hat - x) ** 2).mean((1, 2, 3)) * 255.0 ** 2
    bpp = bits / (x.shape[2] * x.shape[3])
    return torch.as_tensor(LAMBDAS, device=x.device)[q] * mse + bpp, bpp, mse


# ---------------------------------------------------------------- refinement (cnn-ae-ft's encoder)

REFINE_MAX_POSITIONS = 128 * 128  # latent positions (1 Mpixel): larger images are not refined
REFINE_ITERATIONS = 3
REFINE_STEPS = (0.15, 0.3)  # tried along the gradient, as the largest change of any latent


def _coded_cost(net: BlockAutoencoder, x, v, qi) -> float:
    """lambda * MSE + bits per pixel of the latents v once rounded: what coding them costs."""
    with torch.no_grad():
        x_hat, bits = net.code(torch.round(v), qi, "rounded")
        return float(rd_loss(x, x_hat, bits, qi)[0])


def refine_latents(net: BlockAutoencoder, x, v, q: int, iterations: int = REFINE_ITERATIONS):
    """Gradient descent with a line search on the scaled latents v of one image, on the
    image's own lambda * MSE + bits, then rounding.

    The gradient is taken with rounding seen straight-through by the synthesis and the rate
    measured on the unrounded values; each step tries a few lengths and keeps the one whose
    *rounded* latents cost least, and the search stops when none improves. So the result is
    never worse than plain rounding. (Adam on the latents, tried first, moves every latent
    by its step size, so the many near-zero ones cross rounding boundaries at random: it
    gained half as much at the same cost.)
    """
    qi = torch.tensor([q], device=x.device)
    current = v.detach()
    cost = _coded_cost(net, x, current, qi)
    for _ in range(iterations):
        trial = current.clone().requires_grad_(True)
        x_hat, bits = net.code(trial, qi, "latents")
        grad, = torch.autograd.grad(rd_loss(x, x_hat, bits, qi)[0].sum(), trial)
        grad = grad / grad.abs().max().clamp_min(1e-12)
        step_cost, step = min((_coded_cost(net, x, current - s * grad, qi), s) for s in REFINE_STEPS)
        if step_cost >= cost:
            break
        current, cost = (current - step * grad).detach(), step_cost
    return torch.round(current)


# ---------------------------------------------------------------- weights

ARCHITECTURE = "block-autoencoder"
# Parameter names of the first weights files, before the layers became classes of their own.
_LEGACY_NAMES = {"post_in.": "post.inp.", "post_out.": "post.out.", "log_gain": "gains.log_gain",
                 "log_inverse_gain": "gains.log_inverse_gain", "log_scales": "entropy.log_scales",
                 "mix_logit": "entropy.mix_logit"}


def current_name(name: str) -> str:
    for old, new in _LEGACY_NAMES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def build_model(file: W.WeightsFile | None = None) -> BlockAutoencoder:
    """The network of a weights file (its recorded architecture and parameters), or a new one."""
    if file is None:
        return BlockAutoencoder()
    arch = dict(file.meta.get("architecture") or {})
    if arch.pop("name", ARCHITECTURE) != ARCHITECTURE:
        raise WeightsError(f"weights {file.path} are not a {ARCHITECTURE}")
    try:
        net = BlockAutoencoder(**arch)
    except TypeError as exc:
        raise WeightsError(f"weights {file.path} record an unknown architecture ({exc})") from None
    W.load_state(net, {current_name(k): v for k, v in file.params.items()}, file.path, ARCHITECTURE)
    return net


def save_weights(net: BlockAutoencoder, path: Path, method: str) -> None:
    """Float parameters, the architecture and the integer coding tables made from them."""
    params = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    arch = {"name": ARCHITECTURE, **net.architecture()}
    W.write_npz(path, params, net.entropy.export_tables(), {"method": method, "architecture": arch})


class Weights:
    """A loaded weights file: the network with its integer tables, built once."""

    def __init__(self, path: Path):
        self.file = W.load(path)
        self.model_id = self.file.model_id
        self.meta = self.file.meta
        if "table_freq" not in self.file.arrays or "table_offsets" not in self.file.arrays:
            raise WeightsError(f"weights {path} have no coding tables")
        self._net: BlockAutoencoder | None = None

    def _built(self) -> BlockAutoencoder:
        if self._net is None:
            net = build_model(self.file)
            net.entropy.load_tables(self.file.arrays["table_freq"], self.file.arrays["table_offsets"], self.file.path)
            net.eval()
            net.requires_grad_(False)  # coding never trains; refinement differentiates the latents only
            self._net = net
        return self._net

    def net(self, device: str) -> BlockAutoencoder:
        return self._built().to(device)

    @property
    def entropy(self) -> ContextEntropyModel:
        """The entropy model (its tables are numpy: coding does not care where the net is)."""
        return self._built().entropy


# ---------------------------------------------------------------- the codecs

class CnnAeCodec(LossyCodec):
    qualities = range(1, QUALITIES + 1)
    block = BLOCK
    refine_iterations = 0
    weights_class = Weights

    def latents(self, rgb: np.ndarray, quality: int, device: str = "auto") -> np.ndarray:
        dev = resolve_device(device)
        net = self.weights.net(dev)
        grid = (rgb.shape[0] // BLOCK, rgb.shape[1] // BLOCK)
        x = image_tensor(rgb, dev)
        q = quality - 1
        gain, _ = net.gains(torch.tensor([q], device=dev))
        with torch.no_grad():
            v = tiled(net.analysis, x, BLOCK, 1, grid, BLOCK_LATENTS, HALO) * gain
        if self.refine_iterations and grid[0] * grid[1] <= REFINE_MAX_POSITIONS:
            with torch.enable_grad():
                y = refine_latents(net, x, v, q, self.refine_iterations)
        else:
            y = torch.round(v)
        return y[0].to("cpu", torch.int64).numpy()

    def compress_latents(self, y: np.ndarray, quality: int) -> bytes:
        return self.weights.entropy.compress(y, quality - 1)

    def decompress_latents(self, payload: bytes, quality: int, grid: tuple[int, int]) -> np.ndarray:
        return self.weights.entropy.decompress(payload, quality - 1, *grid)

    def synthesis_net(self, device: str) -> BlockAutoencoder:
        """The network whose synthesis turns latents into pixels (a GAN method swaps its own in)."""
        return self.weights.net(device)

    def reconstruct(self, y: np.ndarray, quality: int, device: str = "auto") -> np.ndarray:
        dev = resolve_device(device)
        net = self.synthesis_net(dev)
        _, inverse_gain = net.gains(torch.tensor([quality - 1], device=dev))
        with torch.no_grad():
            v = torch.from_numpy(y).to(dev).float()[None] * inverse_gain
            x = tiled(net.synthesis, v, 1, BLOCK, y.shape[1:], 3, HALO)
            rgb = torch.clamp(torch.round(x[0] * 255.0), 0, 255).to("cpu", torch.uint8)
        return rgb.permute(1, 2, 0).numpy()


class CnnAeFtCodec(CnnAeCodec):
    """The fine-tuned network, with per-image latent refinement at encode time."""
    refine_iterations = REFINE_ITERATIONS
