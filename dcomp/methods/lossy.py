"""What every lossy method shares around its network: qualities, padding to whole blocks,
greyscale and alpha, the device, and tiles for large images.

A method supplies `latents` (image to integer latents), `reconstruct` (latents to pixels)
and an entropy model with `compress` / `decompress`; this base turns them into the codec the
registry serves: `encode` to sections, `decode` back to an image.

Sections of a lossy file: the latents' payload, then, for RGBA images only, the alpha plane
coded losslessly (as mlp's filtered mode, without weights).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dcomp.container import Header
from dcomp.errors import CorruptFileError, UnsupportedError
from dcomp.methods.planes import decode_plane, encode_plane

TILE = 128  # latent positions per tile side


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError("--device cuda: no CUDA device is available")
    return device


def tiled(fn, src, scale_in: int, scale_out: int, grid: tuple[int, int], channels: int, halo: int,
          tile: int = TILE):
    """fn over a (1, C, H, W) tensor in tiles of `tile` grid positions with `halo` around each.

    The halo is wider than the receptive field, so tiles meet without seams: each output
    tile is computed from all the input it depends on, exactly as the whole image would be.
    """
    import torch
    h, w = grid
    if h <= tile + halo and w <= tile + halo:
        return fn(src)
    out = torch.empty(1, channels, h * scale_out, w * scale_out, device=src.device)
    for i0 in range(0, h, tile):
        for j0 in range(0, w, tile):
            i1, j1 = min(h, i0 + tile), min(w, j0 + tile)
            a0, a1, b0, b1 = max(0, i0 - halo), min(h, i1 + halo), max(0, j0 - halo), min(w, j1 + halo)
            piece = fn(src[:, :, a0 * scale_in:a1 * scale_in, b0 * scale_in:b1 * scale_in])
            out[:, :, i0 * scale_out:i1 * scale_out, j0 * scale_out:j1 * scale_out] = \
                piece[:, :, (i0 - a0) * scale_out:(i1 - a0) * scale_out, (j0 - b0) * scale_out:(j1 - b0) * scale_out]
    return out


def image_tensor(rgb: np.ndarray, device: str):
    """(H, W, 3) uint8 to a (1, 3, H, W) float tensor in 0..1 on the device."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0


class LossyCodec:
    """Base of the lossy codecs; name and id come from the registry."""
    lossless = False
    qualities: range
    block: int  # pixels per latent position along each side
    bitstream: str  # which encoder and entropy model the files are written with
    weights_class: type  # the method's loaded weights: built from a path, with a model_id

    def __init__(self, name: str, method_id: int, weights: Path):
        self.name, self.method_id, self.path = name, method_id, Path(weights)
        self.bitstream = name
        self._weights = None

    @property
    def weights(self):
        """The weights, loaded on first use (a missing file is a WeightsError then)."""
        if self._weights is None:
            self._weights = self.weights_class(self.path)
        return self._weights

    def model_id(self) -> bytes:
        """4 bytes identifying the weights that parse the files (encoder and entropy model)."""
        return self.weights.model_id

    # -- supplied by each method

    def latents(self, rgb: np.ndarray, quality: int, device: str):
        """(H, W, 3) uint8, H and W multiples of the block, to integer latents: the method's
        own layout (one (C, H/b, W/b) array for block transforms, a list of bands for the
        wavelet), which only its compress_latents and reconstruct read."""
        raise NotImplementedError

    def compress_latents(self, y, quality: int) -> bytes:
        raise NotImplementedError

    def decompress_latents(self, payload: bytes, quality: int, grid: tuple[int, int]):
        raise NotImplementedError

    def reconstruct(self, y, quality: int, device: str) -> np.ndarray:
        """Integer latents to (H, W, 3) uint8 pixels of the padded image."""
        raise NotImplementedError

    # -- the codec

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.block), -(-width // self.block)

    def padded_rgb(self, image: np.ndarray) -> np.ndarray:
        """The image's colour (greyscale as R = G = B) padded to whole blocks by repeating edge
        pixels: the padded area costs few bits and is cropped off after decoding."""
        rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
        h, w = rgb.shape[:2]
        gh, gw = self.grid(h, w)
        return np.pad(rgb, ((0, gh * self.block - h), (0, gw * self.block - w), (0, 0)), mode="edge")

    def encode(self, image: np.ndarray, quality: int | None, device: str = "auto") -> list[bytes]:
        if quality not in self.qualities:
            raise UnsupportedError(f"{self.name} needs a quality in {self.qualities.start}..{self.qualities.stop - 1}")
        sections = [self.compress_latents(self.latents(self.padded_rgb(image), quality, device), quality)]
        if image.shape[2] == 4:
            sections.append(encode_plane(image[:, :, 3:]))
        return sections

    def decode(self, header: Header, sections: list[bytes], device: str = "auto") -> np.ndarray:
        expected = 2 if header.channels == 4 else 1
        if len(sections) != expected:
            raise CorruptFileError(f"truncated: {self.name} needs {expected} section(s), file has {len(sections)}")
        if header.quality not in self.qualities:
            raise CorruptFileError(f"quality {header.quality} out of range for {self.name}")
        h, w = header.height, header.width
        y = self.decompress_latents(sections[0], header.quality, self.grid(h, w))
        alpha = None
        if header.channels == 4:  # checked before the synthesis, the costly part
            alpha = decode_plane(sections[1], (h, w, 1))
        rgb = self.reconstruct(y, header.quality, device)[:h, :w]
        if header.channels == 1:
            return np.round(rgb.astype(np.float32).mean(axis=2, keepdims=True)).astype(np.uint8)
        if alpha is not None:
            return np.concatenate([rgb, alpha], axis=2)
        return np.ascontiguousarray(rgb)
