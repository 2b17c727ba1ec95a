"""Method names and ids to codec objects. A new method is one entry here and one module.

This table is the only place that names a method and gives it its id: codecs are built with
both and define neither.

Method modules are imported only when asked for, so the CLI starts fast and a method's
heavy dependencies (torch) load only when that method is used.
"""
from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

from dcomp.errors import UnknownMethodError
from dcomp.methods.base import Codec

# name -> (method id, module, class, weights file)
METHODS: dict[str, tuple[int, str, str, str]] = {
    "mlp": (1, "dcomp.methods.mlp", "MlpCodec", "mlp.npz"),
    "cnn-ae": (2, "dcomp.methods.cnn_ae", "CnnAeCodec", "cnn-ae.npz"),
    "cnn-ae-ft": (3, "dcomp.methods.cnn_ae", "CnnAeFtCodec", "cnn-ae-ft.npz"),
    "gan-ae": (4, "dcomp.methods.gan_ae", "GanDecoderCodec", "gan-ae.npz"),
    "gan-ae-dc": (5, "dcomp.methods.gan_ae", "GanDecoderCodec", "gan-ae-dc.npz"),
    "cnn-rnn-ae": (6, "dcomp.methods.cnn_rnn_ae", "CnnRnnAeCodec", "cnn-rnn-ae.npz"),
}

# Retired backbones whose files still decode: method -> (module, class). Their weights live in
# weights/legacy/<method>.<model id>.npz, found by the model id a file's header names.
LEGACY: dict[str, tuple[str, str]] = {
    "cnn-ae": ("dcomp.methods.block_ae", "CnnAeCodec"),
    "cnn-ae-ft": ("dcomp.methods.block_ae", "CnnAeFtCodec"),
}

_cache: dict[str, Codec] = {}


def weights_dir() -> Path:
    """DCOMP_WEIGHTS_DIR, else the `weights/` folder of the source tree."""
    env = os.environ.get("DCOMP_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def names() -> list[str]:
    return list(METHODS)


def get(name: str) -> Codec:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method '{name}' (choose from: {', '.join(METHODS)})")
    if name not in _cache:
        method_id, module, cls, weights = METHODS[name]
        _cache[name] = getattr(import_module(module), cls)(name, method_id, weights_dir() / weights)
    return _cache[name]


def by_id(method_id: int) -> Codec:
    for name, (mid, *_) in METHODS.items():
        if mid == method_id:
            return get(name)
    raise UnknownMethodError(f"unknown method id {method_id} (this dcomp knows: "
                             + ", ".join(f"{m[0]}={n}" for n, m in METHODS.items()) + ")")


def legacy(name: str, model_id: bytes) -> Codec | None:
    """The retired codec of `name` whose kept weights have this model id, if there is one."""
    if name not in LEGACY:
        return None
    path = weights_dir() / "legacy" / f"{name}.{model_id.hex()}.npz"
    key = f"{name}@{model_id.hex()}"
    if key not in _cache:
        if not path.is_file():
            return None
        module, cls = LEGACY[name]
        codec = getattr(import_module(module), cls)(name, METHODS[name][0], path)
        if codec.model_id() != model_id:  # a renamed or damaged file: not the weights named
            return None
        _cache[key] = codec
    return _cache[key]
