"""The lossy backbone's ablation: untrained or trained transform, times a context-free or the
context entropy model, each coded for real with cnn-ae-ft's encoder (RDOQ) and measured as
BD-rate on PSNR against JPEG 2000 on the same images.

Every variant's tables are fitted the same way (dcomp.train.cnn_ae.fit_tables, on training
photos, never on the images measured), so the four differ only in what they name.

    python -m dcomp.bench.ablation --dataset ../shared/data/kodak --weights weights/cnn-ae-ft.npz \\
        --train ../shared/data/photos-train --json results/ablation-kodak.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from dcomp import classical, metrics
from dcomp import weights as W
from dcomp.imageio import list_images, load_rgb

QUALITIES = (1, 2, 4, 6, 8)
J2K_BPP = (0.1, 0.15, 0.25, 0.4, 0.6, 0.9, 1.3, 1.8)


class _InMemoryWeights:
    """What a codec asks of its weights, for a network that was never written to a file."""

    def __init__(self, net):
        self._net = net
        self.entropy = net.entropy
        self.model_id = b"\0\0\0\0"

    def net(self, device: str):
        return self._net.to(device)


def variant(weights: Path | None, contexts: bool, photos: list[np.ndarray], seed: int, log):
    """A network (trained from `weights`, or untrained) with its tables fitted afresh."""
    from dcomp.methods import cnn_ae as M
    from dcomp.train.cnn_ae import TABLE_FIT_ITERATIONS, fit_tables

    net = M.WaveletAutoencoder(contexts=contexts)
    if weights is not None:
        trained = M.build_model(W.load(weights))
        net.load_state_dict(trained.state_dict())
    net.eval()
    fit_tables(net, photos, np.random.default_rng(seed), TABLE_FIT_ITERATIONS, log=log)
    tables = net.entropy.export_tables()
    net.entropy.load_tables(tables["table_freq"], tables["table_offsets"], "ablation")
    net.requires_grad_(False)
    return net


def curve(net, images: list[np.ndarray], qualities=QUALITIES) -> list[dict]:
    """Mean bpp and PSNR per quality of real files (payload bytes) through cnn-ae-ft's codec."""
    from dcomp.methods.cnn_ae import CnnAeFtCodec
    codec = CnnAeFtCodec("cnn-ae-ft", 3, Path("in-memory"))
    codec._weights = _InMemoryWeights(net)
    out = []
    for q in qualities:
        bpp, psnr = [], []
        for img in images:
            padded = codec.padded_rgb(img)
            payload = codec.compress_latents(codec.latents(padded, q, "cpu"), q)
            y = codec.decompress_latents(payload, q, codec.grid(*img.shape[:2]))
            rec = codec.reconstruct(y, q, "cpu")[:img.shape[0], :img.shape[1]]
            bpp.append(len(payload) * 8 / (img.shape[0] * img.shape[1]))
            psnr.append(metrics.psnr(img, rec))
        out.append({"quality": q, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return out


def jpeg2000_curve(images: list[np.ndarray]) -> list[dict]:
    codec = classical.get_codec("jpeg2000")
    out = []
    for target in J2K_BPP:
        bpp, psnr = [], []
        for img in images:
            data, rec = codec.roundtrip(img, target)
            bpp.append(len(data) * 8 / (img.shape[0] * img.shape[1]))
            psnr.append(metrics.psnr(img, rec))
        out.append({"target_bpp": target, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    return out


def bd_against(anchor: list[dict], test: list[dict]) -> float | None:
    return metrics.bd_rate([p["bpp"] for p in anchor], [p["psnr"] for p in anchor],
                           [p["bpp"] for p in test], [p["psnr"] for p in test])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True, help="folder of evaluation images")
    ap.add_argument("--weights", type=Path, required=True, help="the trained weights (cnn-ae-ft)")
    ap.add_argument("--train", type=Path, nargs="+", required=True, help="folders of training photos for the table fits")
    ap.add_argument("--images", type=int, default=0, help="only the first N images (0: all)")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch
    from dcomp.train.data import photos as load_photos, split
    torch.set_num_threads(2)
    log = lambda m: print(m, flush=True)  # noqa: E731
    paths = list_images(args.dataset)
    images = [load_rgb(p) for p in (paths[:args.images] if args.images else paths)]
    train_paths = [p for folder in args.train for p in split(folder)[0]]
    photos = load_photos(train_paths[::2], log)
    t0 = time.time()
    anchor = jpeg2000_curve(images)
    result = {"dataset": str(args.dataset), "images": len(images), "weights": str(args.weights),
              "weights_sha256": hashlib.sha256(args.weights.read_bytes()).hexdigest(), "jpeg2000": anchor, "variants": {}}
    for name, weights, contexts in (("untrained transform, context-free tables", None, False),
                                    ("untrained transform, context model (entropy model alone)", None, True),
                                    ("trained transform, context-free tables (transform alone)", args.weights, False),
                                    ("trained transform, context model (both)", args.weights, True)):
        points = curve(variant(weights, contexts, photos, 0, log), images)
        result["variants"][name] = {"curve": points, "bd_rate_vs_jpeg2000": bd_against(anchor, points)}
        log(f"{name}: BD-rate {result['variants'][name]['bd_rate_vs_jpeg2000']:+.1f}% vs JPEG 2000")
    result["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
