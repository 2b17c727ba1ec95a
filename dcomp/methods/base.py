"""What every method module provides to the registry."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from dcomp.container import Header


class Codec(Protocol):
    """Built by the registry as Class(name, method_id, weights_path): the registry is the one
    place that names methods and numbers them."""
    name: str
    method_id: int
    lossless: bool
    qualities: range | None  # None for lossless methods
    bitstream: str  # methods with the same bitstream decode each other's files

    def model_id(self) -> bytes:
        """4 bytes identifying the weights; decoding refuses files made with others."""

    def encode(self, image: np.ndarray, quality: int | None, device: str) -> list[bytes]:
        """(H, W, C) uint8 image to the payloads of the container's sections."""

    def decode(self, header: Header, sections: list[bytes], device: str) -> np.ndarray:
        """Sections back to the (H, W, C) uint8 image; DcompError on bad data."""
