"""`cnn-rnn-ae`: a recurrent, progressive autoencoder. One file decodes at any iteration prefix.

Reads top to bottom: the transforms, the progressive binary code, the recurrent decoder and
its training loss, the weights, then the codec.

Transforms. The analysis and synthesis are cnn-ae-ft's block transforms (8x8 blocks, 192
latent channels), which start this method as a working transform codec; a learned gain per
channel scales the latents to the finest step, where they are rounded once.

Progressive code (dcomp.entropy.bitplane). Iteration k lowers each channel's bit plane to
the schedule's p_c(k): every iteration sends, as binary decisions, what the previous ones left
of the latents at the new planes, so the error shrinks with every iteration. The schedule
comes from cnn-ae-ft's per-quality gains: at every iteration each channel's step is about the
one cnn-ae-ft's rate-distortion training chose for that rate, rounded to a power of two
(successive steps must nest). The binary model's counts start from priors counted on the
training photos and adapt within the file.

Recurrent decoder. A convolutional GRU at the latent resolution runs once per iteration on
the latents decoded so far; its state carries what earlier iterations showed. Its output
moves each latent within its current quantization step (where in its interval the value
most likely lies, given the neighbourhood and the history); the synthesis turns the result
into pixels. The output layer starts at zero, so the untrained model is the plain
bit-plane codec. Training (dcomp.train.cnn_rnn_ae) minimizes the summed log-MSE over the
iterations, the decoder only: the bits do not change.

The reconstruction is one-shot (the synthesis of all latents decoded so far), not additive
(a sum of per-iteration syntheses): both were measured, see the README.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcomp import weights as W
from dcomp.container import Header
from dcomp.entropy import bitplane
from dcomp.errors import CorruptFileError, UnsupportedError, WeightsError
from dcomp.layers import BLOCK, BLOCK_LATENTS, BlockTransforms, ConvGRUCell
from dcomp.methods.block_ae import DC_CHANNELS, HALO, channel_groups
from dcomp.methods.lossy import LossyCodec, image_tensor, resolve_device, tiled
from dcomp.methods.planes import decode_plane, encode_plane

ITERATIONS = 16
ARCHITECTURE = "progressive-block-autoencoder"


# ---------------------------------------------------------------- transforms and recurrent decoder

class ProgressiveAutoencoder(BlockTransforms):
    def __init__(self, planes: np.ndarray, analysis_hidden: int = 64, synthesis_hidden: int = 96,
                 post_hidden: int = 32, recurrent_hidden: int = 32):
        super().__init__(analysis_hidden, synthesis_hidden, post_hidden)
        self.log_gain = nn.Parameter(torch.zeros(BLOCK_LATENTS))
        self.log_inverse_gain = nn.Parameter(torch.zeros(BLOCK_LATENTS))
        iterations = planes.shape[0] - 1
        self.recurrent = ConvGRUCell(BLOCK_LATENTS, recurrent_hidden, iterations)
        self.correction = nn.Conv2d(recurrent_hidden, BLOCK_LATENTS, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)
        # A channel's current step (in finest units); before its first plane, that plane's.
        first = np.where(planes < bitplane.TOP, planes, -1).max(axis=0).clip(min=0)
        step = np.exp2(np.minimum(planes[1:], first[None]).astype(np.float64))
        self.register_buffer("step", torch.tensor(step, dtype=torch.float32), persistent=False)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1 -> (N, 192, H/8, W/8) at the finest step's scale (round to code)."""
        return self.analysis(x) * torch.exp(self.log_gain)[None, :, None, None]

    def decode_step(self, dequantized: torch.Tensor, h: torch.Tensor | None, k: int):
        """Latents decoded after iteration k (1-based, finest units) and the recurrent state ->
        (latents for the synthesis, new state)."""
        inverse = torch.exp(self.log_inverse_gain)[None, :, None, None]
        y = dequantized * inverse
        if h is None:
            h = self.recurrent.initial(y)
        h = self.recurrent(y, h, k - 1)
        scale = self.step[k - 1][None, :, None, None] * inverse
        return y + torch.tanh(self.correction(h)) * scale, h


def progress_loss(x: torch.Tensor, x_hats: list[torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
    """Mean over the iterations decoded of log MSE (every iteration's quality counts alike in
    dB), and each iteration's PSNR."""
    mses = [((xh - x) ** 2).mean() * 255.0 ** 2 for xh in x_hats]
    loss = torch.stack([torch.log(m) for m in mses]).mean()
    return loss, [float(10 * torch.log10(255.0 ** 2 / m.detach())) for m in mses]


def dequantize(q: torch.Tensor, planes: np.ndarray, k: int) -> torch.Tensor:
    """What the decoder holds after k iterations of latents q (N, C, h, w), as floats: the
    same values as bitplane.State.of(...).dequantized(), for training in batches."""
    p = torch.as_tensor(planes[k], device=q.device)[None, :, None, None]
    qi = q.to(torch.int64)
    step = torch.exp2(p.to(torch.float64))
    m = torch.bitwise_right_shift(qi.abs(), p).to(torch.float64)
    ac = torch.where(m > 0, (m + bitplane.RECONSTRUCTION_OFFSET) * step - 0.5, torch.zeros_like(m))
    out = torch.where(qi < 0, -ac, ac)
    dc = list(DC_CHANNELS)
    out[:, dc] = (torch.bitwise_right_shift(qi[:, dc], p[:, dc]).to(torch.float64) + 0.5) * step[:, dc] - 0.5
    out = torch.where(p == bitplane.TOP, torch.zeros_like(out), out)
    return out.to(torch.float32)


# ---------------------------------------------------------------- weights

def build_model(file: W.WeightsFile) -> ProgressiveAutoencoder:
    arch = dict(file.meta.get("architecture") or {})
    if arch.pop("name", None) != ARCHITECTURE:
        raise WeightsError(f"weights {file.path} are not a {ARCHITECTURE}")
    try:
        net = ProgressiveAutoencoder(layout_of(file).planes, **arch)
    except TypeError as exc:
        raise WeightsError(f"weights {file.path} record an unknown architecture ({exc})") from None
    W.load_state(net, file.params, file.path, ARCHITECTURE)
    return net


def layout_of(file: W.WeightsFile) -> bitplane.Layout:
    planes = file.arrays.get("planes")
    if planes is None or planes.ndim != 2 or planes.shape[1] != BLOCK_LATENTS:
        raise WeightsError(f"weights {file.path} have no plane schedule")
    try:
        return bitplane.Layout(planes, channel_groups(), DC_CHANNELS)
    except ValueError as exc:
        raise WeightsError(f"weights {file.path}: {exc}") from None


def save_weights(net: ProgressiveAutoencoder, planes: np.ndarray, prior: np.ndarray, path: Path,
                 meta: dict | None = None) -> None:
    params = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    arch = {"name": ARCHITECTURE, **net.architecture(), "recurrent_hidden": net.recurrent.hidden}
    W.write_npz(path, params, {"planes": planes.astype(np.int64), "prior": prior.astype(np.int64)},
                {"method": "cnn-rnn-ae", "architecture": arch, **(meta or {})})


class Weights:
    def __init__(self, path: Path):
        self.file = W.load(path)
        self.model_id = self.file.model_id
        self.layout = layout_of(self.file)
        prior = self.file.arrays.get("prior")
        if prior is None or prior.shape != (self.layout.space.size, 2) or prior.min() < 1 \
                or prior.sum(axis=1).max() > bitplane.COUNT_LIMIT:
            raise WeightsError(f"weights {path} have no valid binary model priors")
        self.prior = prior.astype(np.int64)
        self._net: ProgressiveAutoencoder | None = None

    def net(self, device: str) -> ProgressiveAutoencoder:
        if self._net is None:
            net = build_model(self.file)
            net.eval()
            net.requires_grad_(False)
            self._net = net
        return self._net.to(device)


# ---------------------------------------------------------------- the codec

class CnnRnnAeCodec(LossyCodec):
    """Sections: for RGBA the alpha plane first (lossless), then one per iteration."""
    qualities = range(1, ITERATIONS + 1)
    block = BLOCK
    progressive = True
    weights_class = Weights

    def latents(self, rgb: np.ndarray, quality: int, device: str = "auto") -> np.ndarray:
        dev = resolve_device(device)
        net = self.weights.net(dev)
        grid = (rgb.shape[0] // BLOCK, rgb.shape[1] // BLOCK)
        x = image_tensor(rgb, dev)
        with torch.no_grad():
            v = tiled(net.latents, x, BLOCK, 1, grid, BLOCK_LATENTS, HALO)
        limit = (1 << bitplane.TOP) - 1
        return torch.round(v)[0].clamp(-limit, limit).to("cpu", torch.int64).numpy()

    def encode(self, image: np.ndarray, quality: int | None, device: str = "auto") -> list[bytes]:
        if quality not in self.qualities:
            raise UnsupportedError(f"{self.name} needs a quality (iterations) in 1..{ITERATIONS}")
        q = self.latents(self.padded_rgb(image), quality, device)
        sections = [encode_plane(image[:, :, 3:])] if image.shape[2] == 4 else []
        return sections + bitplane.encode_iterations(self.weights.layout, self.weights.prior, q, quality)

    def iteration_sections(self, header: Header, sections: list[bytes]) -> list[bytes]:
        return sections[1:] if header.channels == 4 else sections

    def prefix(self, header: Header, sections: list[bytes], iterations: int) -> list[bytes]:
        """The sections of the file's first `iterations` iterations (alpha included)."""
        available = len(self.iteration_sections(header, sections))
        if not 1 <= iterations <= available:
            raise UnsupportedError(f"--iterations {iterations}: the file has 1..{available}")
        return sections[:len(sections) - available + iterations]

    def decode(self, header: Header, sections: list[bytes], device: str = "auto",
               iterations: int | None = None) -> np.ndarray:
        needed = 2 if header.channels == 4 else 1
        if len(sections) < needed:
            raise CorruptFileError(f"truncated: {self.name} needs at least {needed} section(s), "
                                   f"file has {len(sections)}")
        if header.quality != 0:
            raise CorruptFileError(f"quality {header.quality} in the header: {self.name} files carry 0")
        if iterations is not None:
            sections = self.prefix(header, sections, iterations)
        steps = self.iteration_sections(header, sections)
        h, w = header.height, header.width
        grid = self.grid(h, w)
        alpha = decode_plane(sections[0], (h, w, 1)) if header.channels == 4 else None
        rgb = self.reconstruct_steps(steps, grid, device)[:h, :w]
        if header.channels == 1:
            return np.round(rgb.astype(np.float32).mean(axis=2, keepdims=True)).astype(np.uint8)
        if alpha is not None:
            return np.concatenate([rgb, alpha], axis=2)
        return np.ascontiguousarray(rgb)

    def reconstruct_steps(self, payloads: list[bytes], grid: tuple[int, int], device: str = "auto") -> np.ndarray:
        """Iteration payloads to (H, W, 3) uint8 pixels of the padded image."""
        dev = resolve_device(device)
        net = self.weights.net(dev)
        hidden = None
        latents = None

        def step(state: bitplane.State) -> None:
            nonlocal hidden, latents
            with torch.no_grad():
                deq = torch.from_numpy(state.dequantized()).to(dev)[None]
                latents, hidden = net.decode_step(deq, hidden, state.iteration)

        bitplane.decode_iterations(self.weights.layout, self.weights.prior, payloads, *grid, on_iteration=step)
        with torch.no_grad():
            x = tiled(net.synthesis, latents, 1, BLOCK, grid, 3, HALO)
            rgb = torch.clamp(torch.round(x[0] * 255.0), 0, 255).to("cpu", torch.uint8)
        return rgb.permute(1, 2, 0).numpy()
