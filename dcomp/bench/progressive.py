"""What cnn-rnn-ae's entropy coding saves, iteration by iteration, and the time of a full
16-iteration round trip: `python -m dcomp.bench.progressive --dataset FOLDER`.

Per iteration, over the images, three rates of the same quantized latents: the binary
decisions it makes, sent raw at one bit each; a memoryless coder's, the zeroth-order entropy
of each channel's quantization indices at its plane (DC: of their left differences) with
ideal per-image tables, cumulative like the file; and what the adaptive binary model codes
them in. Decisions are counted by running the coder itself, so the count is exact.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dcomp import api, registry
from dcomp.entropy import bitplane
from dcomp.imageio import list_images, load_rgb

METHOD = "cnn-rnn-ae"


class _Counting(bitplane.AdaptiveBits):
    """AdaptiveBits that also counts the decisions of each iteration."""

    per_iteration: list[int]

    def _chunk(self, contexts, bits):
        self.per_iteration[-1] += len(contexts)
        return super()._chunk(contexts, bits)


def decisions_per_iteration(q: np.ndarray, layout: bitplane.Layout, prior: np.ndarray) -> list[int]:
    bits = _Counting(layout.space, prior)
    bits.per_iteration = []
    state = bitplane.State(layout, *q.shape[1:])
    for _ in range(layout.iterations):
        bits.per_iteration.append(0)
        bitplane.code_iteration(state, bits, q)
    return bits.per_iteration


def memoryless_bits(q: np.ndarray, layout: bitplane.Layout) -> list[float]:
    """Per iteration k, the zeroth-order entropy (bits) of the indices known after k
    iterations, minus that after k - 1: what a memoryless coder would add."""
    totals = []
    for k in range(1, layout.iterations + 1):
        bits = 0.0
        for c in range(q.shape[0]):
            p = int(layout.planes[k, c])
            if p == bitplane.TOP:
                continue
            if c in layout.dc_channels:
                d = q[c] >> p
                index = np.concatenate([d[:, :1], np.diff(d, axis=1)], axis=1)
            else:
                index = np.sign(q[c]) * (np.abs(q[c]) >> p)
            _, counts = np.unique(index, return_counts=True)
            f = counts / counts.sum()
            bits += float(-(f * np.log2(f)).sum()) * index.size
        totals.append(bits)
    return list(np.diff([0.0] + totals))


def run(folder: Path, limit: int | None = None, log=print) -> dict:
    codec = registry.get(METHOD)
    weights = codec.weights
    paths = list_images(folder)[:limit]
    n = weights.layout.iterations
    raw, coded, h0, pixels, enc_s, dec_s = np.zeros(n), np.zeros(n), np.zeros(n), 0, [], []
    for path in paths:
        image = load_rgb(path)
        h, w = image.shape[:2]
        start = time.perf_counter()
        data = api.compress(image, METHOD, n)
        enc_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        api.decompress(data)
        dec_s.append(time.perf_counter() - start)
        fields = api.info(data)
        coded += np.array(fields["iteration_bytes"]) * 8
        q = codec.latents(codec.padded_rgb(image), n, "cpu")
        raw += decisions_per_iteration(q, weights.layout, weights.prior)
        h0 += memoryless_bits(q, weights.layout)
        pixels += h * w
        log(f"{path.name}: {len(data) * 8 / (h * w):.3f} bpp, encode {enc_s[-1]:.2f} s, decode {dec_s[-1]:.2f} s")
    rows = [{"iteration": k + 1, "raw_bpp": raw[k] / pixels, "memoryless_bpp": h0[k] / pixels,
             "coded_bpp": coded[k] / pixels} for k in range(n)]
    return {"images": len(paths), "iterations": rows,
            "raw_bpp_total": float(raw.sum() / pixels), "memoryless_bpp_total": float(h0.sum() / pixels),
            "coded_bpp_total": float(coded.sum() / pixels),
            "encode_s_mean": float(np.mean(enc_s)), "decode_s_mean": float(np.mean(dec_s)),
            "round_trip_s_max": float(np.max(np.add(enc_s, dec_s)))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a folder of images")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.dataset, args.limit)
    print("iteration  raw decisions bpp  memoryless bpp  coded bpp")
    for r in result["iterations"]:
        print(f"{r['iteration']:9d}  {r['raw_bpp']:17.3f}  {r['memoryless_bpp']:14.4f}  {r['coded_bpp']:9.4f}")
    print(f"all 16: raw {result['raw_bpp_total']:.3f} bpp, memoryless {result['memoryless_bpp_total']:.3f} bpp, "
          f"coded {result['coded_bpp_total']:.3f} bpp; encode {result['encode_s_mean']:.2f} s, decode "
          f"{result['decode_s_mean']:.2f} s per image (mean), slowest round trip {result['round_trip_s_max']:.2f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
