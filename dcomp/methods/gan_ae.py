"""`gan-ae` and `gan-ae-dc`: cnn-ae-ft's encoder and entropy model, with a decoder (its own copy
of the synthesis lifting steps, dequantization and post filter) fine-tuned
against a patch critic (Wasserstein with gradient penalty, or the DCGAN loss; training in
dcomp.train.gan_ae).

The bitstream is cnn-ae-ft's: at the same quality these methods write the same bits, only the
header's method id differs, and it names the decoder the file prefers. The header's model id
is that of the cnn-ae-ft weights, which parse the file; each decoder's weights record the
model id of the cnn-ae-ft weights they were trained on, and are refused with any other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dcomp import weights as W
from dcomp.errors import WeightsError
from dcomp.methods.cnn_ae import CnnAeFtCodec, WaveletAutoencoder, build_model

BITSTREAM = "cnn-ae-ft"
BITSTREAM_WEIGHTS = "cnn-ae-ft.npz"  # beside the decoder's own weights


class GanDecoderCodec(CnnAeFtCodec):
    def __init__(self, name: str, method_id: int, weights: Path):
        super().__init__(name, method_id, Path(weights).with_name(BITSTREAM_WEIGHTS))
        self.bitstream = BITSTREAM
        self.decoder_path = Path(weights)
        self._decoder_file: W.WeightsFile | None = None
        self._decoder: WaveletAutoencoder | None = None

    def decoder_file(self) -> W.WeightsFile:
        if self._decoder_file is None:
            file = W.load(self.decoder_path)
            trained_for = file.meta.get("bitstream_model_id")
            if trained_for != self.weights.model_id.hex():
                raise WeightsError(f"{self.name} decoder weights {self.decoder_path} were trained for other "
                                   f"{BITSTREAM} weights (model id {trained_for}, installed "
                                   f"{self.weights.model_id.hex()})")
            self._decoder_file = file
        return self._decoder_file

    def model_id(self) -> bytes:
        self.decoder_file()  # missing or mismatched decoder weights: one message, before any work
        return self.weights.model_id

    def synthesis_net(self, device: str) -> WaveletAutoencoder:
        if self._decoder is None:
            file = self.decoder_file()
            net = build_model(self.weights.file)
            _load_decoder(net, dict(file.params), file.path, self.name)
            net.eval()
            net.requires_grad_(False)
            self._decoder = net
        return self._decoder.to(device)


def _load_decoder(net: WaveletAutoencoder, params: dict[str, np.ndarray], source: Path, method: str) -> None:
    """Replace the decoder's parameters; anything else in the file, or a shape that does not fit,
    is a WeightsError."""
    import torch
    state = net.state_dict()
    for name, value in params.items():
        if name not in state or state[name].shape != value.shape:
            raise WeightsError(f"weights {source} do not fit {method}'s decoder (parameter {name})")
        state[name] = torch.from_numpy(np.asarray(value))
    net.load_state_dict(state)
