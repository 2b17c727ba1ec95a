"""`cnn-ae` and `cnn-ae-ft`: a learned lifting wavelet with a context-adaptive subband prior.

Reads top to bottom: the transforms, the entropy model, the rate-distortion forward and its
loss, the per-image refinement of cnn-ae-ft, the weights, then the codecs.

Transforms (dcomp.lifting). Analysis: a learned colour transform, then five levels of the
CDF 9/7 lifting wavelet, each followed by learned convolutional prediction and update
steps. Synthesis: the exact inverse of those steps, then a small full-resolution residual
filter. Everything learned starts at zero (the colour transform as JPEG 2000's ICT), so the
untrained model is a JPEG 2000-like transform codec and training only improves it.

Rate control. One model serves all eight qualities: per quality and band a learned
quantizer step, starting from one pixel-domain step per quality divided by the band's
synthesis norm (equal distortion per step everywhere); per band a learned reconstruction
offset toward zero, since coefficients are peaked at zero within each step.

Entropy model. dcomp.entropy.subband_model: tables chosen by class (level, orientation,
colour) and integer contexts from decoded neighbours, the parent band, siblings and luma.

cnn-ae-ft is the same network fine-tuned on larger photo crops; its encoder also refines
each image's quantization: every coefficient may move one step toward zero where that
saves more rate than it costs distortion at the quality's lambda (rate-distortion optimized
quantization, in tiles of any image size).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcomp import weights as W
from dcomp.entropy.subband_model import SubbandEntropyModel, SubbandLayout
from dcomp.errors import WeightsError
from dcomp.layers import PixelFilter
from dcomp.lifting import LEVELS, LearnedWavelet, synthesis_norms
from dcomp.methods.lossy import LossyCodec, image_tensor, resolve_device, tiled

QUALITIES = 8
LAMBDAS = (0.0008, 0.00145, 0.0026, 0.0047, 0.0085, 0.0154, 0.0277, 0.05)  # D in MSE of 0..255 pixels
# Initial pixel-domain quantizer step per quality: near each lambda's optimum for the untrained
# transform (measured on training crops).
INITIAL_STEPS = (180.0, 133.0, 99.0, 73.0, 54.0, 40.0, 30.0, 22.0)
BLOCK = 1 << LEVELS  # the padded image is whole low-pass samples
POST_HALO = 4  # pixels of context around a tile of the post filter: more than its reach
POST_TILE = 512


def band_channels(levels: int = LEVELS) -> list[int]:
    return [3] + [9] * levels


# ---------------------------------------------------------------- transforms and entropy model

class WaveletAutoencoder(nn.Module):
    def __init__(self, levels: int = LEVELS, lifting_hidden: int = 16, post_hidden: int = 32, contexts: bool = True):
        super().__init__()
        self.transform = LearnedWavelet(levels, lifting_hidden)
        norms = np.concatenate(synthesis_norms(levels))
        self.splits = band_channels(levels)
        self.log_step = nn.Parameter(torch.tensor(
            np.log(np.asarray(INITIAL_STEPS)[:, None] / norms[None, :]), dtype=torch.float32))
        self.recon_offset = nn.Parameter(torch.zeros(len(norms)))
        # What a unit of error in each band costs in the image (the encoder's refinement).
        self.register_buffer("band_norms", torch.tensor(norms), persistent=False)
        self.post = PixelFilter(post_hidden)
        self.entropy = SubbandEntropyModel(SubbandLayout(levels, QUALITIES, contexts))

    def architecture(self) -> dict:
        return {"levels": self.transform.levels, "lifting_hidden": self.transform.hidden,
                "post_hidden": self.post.inp.out_channels}

    def _per_band(self, values: torch.Tensor) -> list[torch.Tensor]:
        """(N, channels of every band) -> per band (N, C, 1, 1)."""
        return [v[:, :, None, None] for v in values.split(self.splits, dim=1)]

    def steps(self, q: torch.Tensor) -> list[torch.Tensor]:
        return self._per_band(torch.exp(self.log_step[q]))

    def analysis(self, x: torch.Tensor, q: torch.Tensor) -> list[torch.Tensor]:
        """Images (N, 3, H, W) in 0..1 -> coefficients in steps of quality q (not rounded)."""
        return [b / s for b, s in zip(self.transform.analysis(x), self.steps(q))]

    def synthesis(self, y: list[torch.Tensor], q: torch.Tensor, tile: bool = False) -> torch.Tensor:
        """Quantized coefficients -> images, not yet clamped."""
        offsets = self._per_band(self.recon_offset.expand(len(q), -1))
        bands = [(v - torch.sign(v) * o) * s for v, o, s in zip(y, offsets, self.steps(q))]
        x = self.transform.synthesis(bands)
        if tile:
            return tiled(self.post, x, 1, 1, x.shape[2:], 3, POST_HALO, tile=POST_TILE)
        return self.post(x)

    # ------------------------------------------------------------ the rate-distortion forward

    def forward(self, x: torch.Tensor, q: torch.Tensor, rate_on: str = "noise"):
        """Images x (N, 3, H, W) in 0..1 at quality indices q (N,) -> (x_hat, bits per item)."""
        return self.code(self.analysis(x, q), q, rate_on)

    def code(self, v: list[torch.Tensor], q: torch.Tensor, rate_on: str = "noise"):
        """Coefficients v in steps -> (x_hat, bits per item).

        The synthesis sees v rounded, with a straight-through gradient; the rate is measured on
        v plus uniform noise ("noise", training) or on v rounded ("rounded", what coding costs).
        """
        y = [torch.round(b).detach() for b in v]
        coded = [b + (torch.rand_like(b) - 0.5) for b in v] if rate_on == "noise" else y
        bits = self.entropy.bits(coded, y, q)
        rounded = y if rate_on == "rounded" else [b + (r - b).detach() for b, r in zip(v, y)]
        return self.synthesis(rounded, q), bits


def rd_loss(x: torch.Tensor, x_hat: torch.Tensor, bits: torch.Tensor, q: torch.Tensor):
    """Per item (lambda * MSE + bits per pixel, bits per pixel, MSE), MSE in 0..255 units."""
    mse = ((x_hat - x) ** 2).mean((1, 2, 3)) * 255.0 ** 2
    bpp = bits / (x.shape[2] * x.shape[3])
    return torch.as_tensor(LAMBDAS, device=x.device)[q] * mse + bpp, bpp, mse


# ---------------------------------------------------------------- weights

ARCHITECTURE = "wavelet-autoencoder"


def build_model(file: W.WeightsFile | None = None) -> WaveletAutoencoder:
    """The network of a weights file (its recorded architecture and parameters), or a new one."""
    if file is None:
        return WaveletAutoencoder()
    arch = dict(file.meta.get("architecture") or {})
    if arch.pop("name", None) != ARCHITECTURE:
        raise WeightsError(f"weights {file.path} are not a {ARCHITECTURE}")
    try:
        net = WaveletAutoencoder(**arch)
    except TypeError as exc:
        raise WeightsError(f"weights {file.path} record an unknown architecture ({exc})") from None
    W.load_state(net, file.params, file.path, ARCHITECTURE)
    return net


def save_weights(net: WaveletAutoencoder, path: Path, method: str) -> None:
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
        self._net: WaveletAutoencoder | None = None

    def _built(self) -> WaveletAutoencoder:
        if self._net is None:
            net = build_model(self.file)
            net.entropy.load_tables(self.file.arrays["table_freq"], self.file.arrays["table_offsets"], self.file.path)
            net.eval()
            net.requires_grad_(False)
            self._net = net
        return self._net

    def net(self, device: str) -> WaveletAutoencoder:
        return self._built().to(device)

    @property
    def entropy(self) -> SubbandEntropyModel:
        return self._built().entropy


# ---------------------------------------------------------------- the codecs

def _bands_to_numpy(bands: list[torch.Tensor]) -> list[np.ndarray]:
    return [b[0].to("cpu", torch.int64).numpy() for b in bands]


class CnnAeCodec(LossyCodec):
    qualities = range(1, QUALITIES + 1)
    block = BLOCK
    refine = False
    weights_class = Weights

    def latents(self, rgb: np.ndarray, quality: int, device: str = "auto") -> list[np.ndarray]:
        dev = resolve_device(device)
        net = self.weights.net(dev)
        q = torch.tensor([quality - 1], device=dev)
        with torch.no_grad():
            v = net.analysis(image_tensor(rgb, dev), q)
        if self.refine:
            from dcomp.methods.rdoq import refine_quantization
            return refine_quantization(net, [b[0].cpu().numpy().astype(np.float64) for b in v], quality - 1,
                                       LAMBDAS[quality - 1])
        return _bands_to_numpy([torch.round(b) for b in v])

    def compress_latents(self, y: list[np.ndarray], quality: int) -> bytes:
        return self.weights.entropy.compress(y, quality - 1)

    def decompress_latents(self, payload: bytes, quality: int, grid: tuple[int, int]) -> list[np.ndarray]:
        return self.weights.entropy.decompress(payload, quality - 1, grid[0] * BLOCK, grid[1] * BLOCK)

    def synthesis_net(self, device: str) -> WaveletAutoencoder:
        """The network whose synthesis turns coefficients into pixels (a GAN method swaps its own in)."""
        return self.weights.net(device)

    def reconstruct(self, y: list[np.ndarray], quality: int, device: str = "auto") -> np.ndarray:
        dev = resolve_device(device)
        net = self.synthesis_net(dev)
        q = torch.tensor([quality - 1], device=dev)
        with torch.no_grad():
            x = net.synthesis([torch.from_numpy(b).to(dev).float()[None] for b in y], q, tile=True)
            rgb = torch.clamp(torch.round(x[0] * 255.0), 0, 255).to("cpu", torch.uint8)
        return rgb.permute(1, 2, 0).numpy()


class CnnAeFtCodec(CnnAeCodec):
    """The fine-tuned network, with rate-distortion optimized quantization at encode time."""
    refine = True
