"""Network layers shared by the lossy methods (torch).

The block transforms start as a classical transform codec (an orthonormal colour transform
times the 8x8 DCT, with gains from the JPEG tables), and every residual branch starts at
zero, so an untrained model is already a working codec and training only improves it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 8
BLOCK_LATENTS = 3 * BLOCK * BLOCK

# Annex K tables of the JPEG standard, used only to initialize the quantizer gains.
_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_JPEG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64)


def colour_dct_basis() -> np.ndarray:
    """192x192 orthonormal matrix: opponent colour transform times the 2-D DCT-II."""
    n = np.arange(BLOCK)
    dct = np.sqrt(2.0 / BLOCK) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * BLOCK))
    dct[0] /= np.sqrt(2.0)
    colour = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    return np.kron(colour, np.kron(dct, dct))


def jpeg_log_gains(jpeg_qualities: tuple[int, ...]) -> np.ndarray:
    """(len(jpeg_qualities), 192): log(255 / JPEG quantizer step) at each JPEG quality."""
    out = np.zeros((len(jpeg_qualities), BLOCK_LATENTS))
    for q, jq in enumerate(jpeg_qualities):
        scale = 5000.0 / jq if jq < 50 else 200.0 - 2 * jq
        luma = np.clip(np.floor((_JPEG_LUMA * scale + 50) / 100), 1, 255)
        chroma = np.clip(np.floor((_JPEG_CHROMA * scale + 50) / 100), 1, 255)
        out[q] = np.log(255.0 / np.concatenate([luma, chroma, chroma]))
    return out


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Residual(nn.Module):
    """y + f(y) with 3x3 convolutions across neighbouring positions; f starts at zero."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = _zero_init(nn.Conv2d(hidden, channels, 3, padding=1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.out(F.gelu(self.mid(F.gelu(self.inp(y)))))


class BlockAnalysis(nn.Conv2d):
    """Pixels (N, 3, H, W) in 0..1 to one 192-vector per 8x8 block: a stride-8 convolution
    (space-to-depth, then 1x1), starting as the colour DCT."""

    def __init__(self):
        super().__init__(BLOCK_LATENTS, BLOCK_LATENTS, 1)
        with torch.no_grad():
            self.weight.copy_(torch.tensor(colour_dct_basis(), dtype=torch.float32)[:, :, None, None])
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pixel_unshuffle(x - 0.5, BLOCK))


class BlockSynthesis(nn.Conv2d):
    """The transpose of BlockAnalysis: 192-vectors back to 8x8 blocks of pixels."""

    def __init__(self):
        super().__init__(BLOCK_LATENTS, BLOCK_LATENTS, 1)
        with torch.no_grad():
            self.weight.copy_(torch.tensor(colour_dct_basis().T, dtype=torch.float32)[:, :, None, None])
            self.bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(super().forward(y), BLOCK) + 0.5


class PixelFilter(nn.Module):
    """x + g(x) at full resolution (deblocking); g starts at zero."""

    def __init__(self, hidden: int):
        super().__init__()
        self.inp = nn.Conv2d(3, hidden, 3, padding=1)
        self.out = _zero_init(nn.Conv2d(hidden, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.gelu(self.inp(x)))


class BlockTransforms(nn.Module):
    """The lossy methods' transforms. Analysis: BlockAnalysis, then a residual block across
    neighbouring blocks. Synthesis: two residual blocks, BlockSynthesis, a PixelFilter."""

    def __init__(self, analysis_hidden: int = 64, synthesis_hidden: int = 96, post_hidden: int = 32):
        super().__init__()
        self.block_analysis = BlockAnalysis()
        self.analysis_residual = Residual(BLOCK_LATENTS, analysis_hidden)
        self.synthesis_residuals = nn.Sequential(Residual(BLOCK_LATENTS, synthesis_hidden),
                                                 Residual(BLOCK_LATENTS, synthesis_hidden))
        self.block_synthesis = BlockSynthesis()
        self.post = PixelFilter(post_hidden)

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1, H and W multiples of 8 -> (N, 192, H/8, W/8)."""
        return self.analysis_residual(self.block_analysis(x))

    def synthesis(self, y: torch.Tensor) -> torch.Tensor:
        """Dequantized latents -> (N, 3, 8h, 8w), not yet clamped."""
        return self.post(self.block_synthesis(self.synthesis_residuals(y)))

    def architecture(self) -> dict:
        """The constructor's arguments, as weights files record them."""
        return {"analysis_hidden": self.analysis_residual.mid.in_channels,
                "synthesis_hidden": self.synthesis_residuals[0].mid.in_channels,
                "post_hidden": self.post.inp.out_channels}


class QualityGains(nn.Module):
    """Per quality, a gain per latent channel before rounding and an inverse gain after it:
    one model serves every quality."""

    def __init__(self, initial_log_gains: np.ndarray):
        super().__init__()
        gains = torch.tensor(initial_log_gains, dtype=torch.float32)
        self.log_gain = nn.Parameter(gains.clone())
        self.log_inverse_gain = nn.Parameter(-gains.clone())

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gains and inverse gains, (N, C, 1, 1), for quality indices q (N,)."""
        return (torch.exp(self.log_gain[q])[:, :, None, None],
                torch.exp(self.log_inverse_gain[q])[:, :, None, None])


class ConvGRUCell(nn.Module):
    """A convolutional GRU: the input enters through 1x1 convolutions, the hidden state
    through 3x3 ones (its context grows by one position per step), plus a learned bias per
    step, so the cell knows how far the coding has come."""

    def __init__(self, channels: int, hidden: int, steps: int):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Conv2d(channels, 3 * hidden, 1)
        self.state = nn.Conv2d(hidden, 3 * hidden, 3, padding=1, bias=False)
        self.step_bias = nn.Parameter(torch.zeros(steps, 3 * hidden))

    def initial(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(like.shape[0], self.hidden, like.shape[2], like.shape[3])

    def forward(self, u: torch.Tensor, h: torch.Tensor, step: int) -> torch.Tensor:
        gi = self.inp(u) + self.step_bias[step][None, :, None, None]
        gh = self.state(h)
        iz, ir, in_ = gi.chunk(3, dim=1)
        hz, hr, hn = gh.chunk(3, dim=1)
        z, r = torch.sigmoid(iz + hz), torch.sigmoid(ir + hr)
        return (1 - z) * h + z * torch.tanh(in_ + r * hn)
