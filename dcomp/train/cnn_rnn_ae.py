"""Training `cnn-rnn-ae`: its start from cnn-ae-ft, its schedule, its binary priors, then its
recurrent decoder.

1. The transforms come from the cnn-ae-ft weights (`--init`), so the first iteration is
   already a working transform codec.
2. The schedule: which channel drops a bit plane at which iteration, chosen greedily by
   distortion saved per bit along each channel's rate-distortion hull on training crops,
   cut where the rate reaches each iteration's target (geometric from FIRST_BPP to
   LAST_BPP). The finest step is FINEST_EXTRA_PLANES halvings below cnn-ae-ft's finest.
3. The priors of the binary model: its decisions counted over training crops, scaled to
   PRIOR_TOTAL per context (counted again whenever the weights are written).
4. The decoder (recurrent cell, synthesis, inverse gains) is trained on random crops to
   minimize the mean log-MSE over the iterations. The bits do not change with it, so the
   schedule and priors stay valid.
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from dcomp import weights as W
from dcomp.entropy import bitplane
from dcomp.methods import block_ae as cnn_ae
from dcomp.methods.cnn_rnn_ae import DC_CHANNELS, ITERATIONS, ProgressiveAutoencoder, dequantize, progress_loss, \
    save_weights
from dcomp.train.data import prepare, random_crops, to_tensor

FIRST_BPP, LAST_BPP = 0.1, 2.0  # the rates the first and the last iteration aim at; geometric between
DC_START_ITERATION = 4
FINEST_EXTRA_PLANES = 2  # the finest step: this many halvings below cnn-ae-ft's finest quality's
PRIOR_TOTAL = 1024  # counts per context in the priors: a few dozen decisions of the image outweigh them
VAL_CROP = 384
ENCODER_PARAMETERS = ("block_analysis", "analysis_residual", "log_gain")
PRIOR_CROPS = 96
PRIOR_CROP = 384
PRIOR_SEED = 1000  # offset: the prior crops do not depend on the training crops' draw
LEARNING_RATE = 2e-4
SYNTHESIZED_ITERATIONS = 4  # per step, the loss is taken at this many random iterations (and the last)


def _index_entropy(index: np.ndarray) -> float:
    """Zeroth-order entropy (bits per value) of integer indices."""
    _, counts = np.unique(index, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _channel_curve(v: np.ndarray, dc: bool, top: int | None = None) -> list[tuple[int, float, float]]:
    """(plane, bits per position, squared error per position) of one channel's latents v
    (crops, h, w; floats at the finest scale) at every plane from `top` down, coarsest
    (nothing coded) first."""
    q = np.round(v).astype(np.int64)
    if top is None:
        top = int(np.abs(q).max()).bit_length() + 1
    curve = [(bitplane.TOP, 0.0, float((v ** 2).mean()))]
    for p in range(top, -1, -1):
        step = float(1 << p)
        if dc:
            d = q >> p
            rec = (d + 0.5) * step - 0.5
            index = np.concatenate([d[:, :, :1], np.diff(d, axis=2)], axis=2)
        else:
            m = np.abs(q) >> p
            rec = np.where(m > 0, np.sign(q) * ((m + bitplane.RECONSTRUCTION_OFFSET) * step - 0.5), 0.0)
            index = np.sign(q) * m
        curve.append((p, _index_entropy(index), float(((v - rec) ** 2).mean())))
    return curve


def _hull(curve: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    """The lower convex hull of a rate-distortion curve, from no rate on: the only points a
    rate-distortion-optimal order stops at."""
    hull = [curve[0]]
    rest = curve[1:]
    while rest:
        r0, d0 = hull[-1][1], hull[-1][2]
        best = max(range(len(rest)), key=lambda i: (d0 - rest[i][2]) / max(rest[i][1] - r0, 1e-9))
        if rest[best][2] >= d0:
            break
        hull.append(rest[best])
        rest = rest[best + 1:]
    return hull


def schedule(latents: np.ndarray, weight: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """greedy_schedule, with each DC channel starting where the first pass has it at
    DC_START_ITERATION: DC refinement bits cost about a bit each, more than the greedy's rate
    proxy says, so the DC is better sent at a finer plane at once."""
    first = greedy_schedule(latents, weight, iterations)
    return greedy_schedule(latents, weight, iterations, {c: int(first[DC_START_ITERATION, c]) for c in DC_CHANNELS})


def greedy_schedule(latents: np.ndarray, weight: np.ndarray, iterations: int,
                    dc_start: dict[int, int] | None = None) -> np.ndarray:
    """(iterations + 1, C) planes: the order of plane refinements that lowers the distortion
    most per bit (greedily, along each channel's convex hull), cut where the rate reaches each
    iteration's target (geometric from FIRST_BPP to LAST_BPP).

    latents: (C, crops, h, w) floats at the finest scale; weight: (C,) each channel's pixel-MSE
    per unit of squared latent error. Rates are zeroth-order entropies of the quantization
    indices (DC: of left differences), a proxy for the context-coded rate that ranks moves."""
    import heapq
    channels = latents.shape[0]
    hulls = [_hull(_channel_curve(latents[c], c in DC_CHANNELS, (dc_start or {}).get(c))) for c in range(channels)]
    position = [0] * channels
    heap = []

    def push(c: int) -> None:
        i = position[c]
        if i + 1 < len(hulls[c]):
            (_, r0, d0), (_, r1, d1) = hulls[c][i], hulls[c][i + 1]
            heapq.heappush(heap, (-(d0 - d1) * weight[c] / max(r1 - r0, 1e-9), c))

    for c in range(channels):
        push(c)
    targets = np.geomspace(FIRST_BPP, LAST_BPP, iterations)
    planes = np.full((iterations + 1, channels), bitplane.TOP, np.int64)
    current = np.full(channels, bitplane.TOP, np.int64)
    rate = 0.0  # bits per pixel: per-position bits over the 64 pixels of a block
    k = 0
    while heap and k < iterations:
        _, c = heapq.heappop(heap)
        (_, r0, _), (p1, r1, _) = hulls[c][position[c]], hulls[c][position[c] + 1]
        while k < iterations and rate + (r1 - r0) / 64 > targets[k]:
            planes[k + 1] = current
            k += 1
        rate += (r1 - r0) / 64
        current[c] = p1
        position[c] += 1
        push(c)
    for j in range(k, iterations):
        planes[j + 1] = current
    return planes


def count_priors(layout: bitplane.Layout, latents: list[np.ndarray]) -> np.ndarray:
    """Decision counts per context over the images' latents, scaled to PRIOR_TOTAL per context."""
    total = np.zeros((layout.space.size, 2), np.int64)
    for q in latents:
        state = bitplane.State(layout, *q.shape[1:])
        tally = _Tally(layout.space)  # raw tallies: no halving, no coder
        for _ in range(layout.iterations):
            bitplane.code_iteration(state, tally, q)
        total += tally.counts
    scale = np.maximum(1, total.sum(axis=1, keepdims=True) / PRIOR_TOTAL)
    prior = np.maximum(1, np.round(total / scale)).astype(np.int64)
    prior[layout.space.raw] = 1
    return prior


class _Tally:
    """The AdaptiveBits interface, counting the decisions it is shown."""

    def __init__(self, space: bitplane.ContextSpace):
        self.space = space
        self.counts = np.zeros((space.size, 2), np.int64)

    def code(self, contexts, bits=None):
        contexts = np.asarray(contexts, np.int64).ravel()
        bits = np.asarray(bits, np.int64).ravel()
        if len(contexts):
            self.counts += np.bincount(contexts * 2 + bits, minlength=2 * self.space.size).reshape(-1, 2)
        return bits


def initial_model(init: Path) -> tuple[cnn_ae.BlockAutoencoder, np.ndarray, np.ndarray]:
    """The cnn-ae-ft network and its per-quality log gains and log inverse gains."""
    file = W.load(init)
    source = cnn_ae.build_model(file)
    log_gain = source.gains.log_gain.detach().numpy().astype(np.float64)
    log_inverse = source.gains.log_inverse_gain.detach().numpy().astype(np.float64)
    return source, log_gain, log_inverse


def assemble(source: cnn_ae.BlockAutoencoder, log_gain: np.ndarray, log_inverse: np.ndarray, planes: np.ndarray,
             recurrent_hidden: int) -> ProgressiveAutoencoder:
    """cnn-ae-ft's transforms in a ProgressiveAutoencoder with base gains at the finest step."""
    net = ProgressiveAutoencoder(planes, recurrent_hidden=recurrent_hidden)
    state = net.state_dict()
    for name, value in source.state_dict().items():
        if name in state and state[name].shape == value.shape:
            state[name] = value.clone()
    base = log_gain[-1] + FINEST_EXTRA_PLANES * math.log(2)
    state["log_gain"] = torch.tensor(base, dtype=torch.float32)
    # cnn-ae-ft's finest quality dequantizes a little below 1/gain; keep that ratio.
    state["log_inverse_gain"] = torch.tensor(-base + (log_gain[-1] + log_inverse[-1]), dtype=torch.float32)
    net.load_state_dict(state)
    return net


def float_latents(net: ProgressiveAutoencoder, images: list[np.ndarray]) -> list[np.ndarray]:
    """Each image's latents (C, h, w) before rounding, from its whole blocks."""
    with torch.no_grad():
        return [net.latents(to_tensor(a[None, :a.shape[0] // 8 * 8, :a.shape[1] // 8 * 8]))[0].numpy()
                for a in images]


def rounded(latents: list[np.ndarray]) -> list[np.ndarray]:
    """The integer latents the codec codes (as CnnRnnAeCodec.latents rounds them)."""
    limit = (1 << bitplane.TOP) - 1
    return [np.clip(np.round(v), -limit, limit).astype(np.int64) for v in latents]


def latents_of(net: ProgressiveAutoencoder, images: list[np.ndarray]) -> list[np.ndarray]:
    return rounded(float_latents(net, images))


def build_initial(init: Path, images: list[np.ndarray], recurrent_hidden: int, log):
    """The untrained model: (net, planes, prior)."""
    source, log_gain, log_inverse = initial_model(init)
    probe = assemble(source, log_gain, log_inverse, np.full((ITERATIONS + 1, 192), bitplane.TOP), recurrent_hidden)
    floats = float_latents(probe, images)
    with torch.no_grad():
        column = (probe.block_synthesis.weight[:, :, 0, 0] ** 2).sum(0)
        weight = (column * torch.exp(probe.log_inverse_gain) ** 2).numpy().astype(np.float64)
    planes = schedule(np.stack(floats, axis=1).astype(np.float64), weight)
    lat = rounded(floats)
    net = assemble(source, log_gain, log_inverse, planes, recurrent_hidden)
    layout = bitplane.Layout(planes, cnn_ae.channel_groups(), DC_CHANNELS)
    prior = count_priors(layout, lat)
    log("schedule: channels coded after each iteration: "
        + " ".join(str(int((planes[k] < bitplane.TOP).sum())) for k in range(1, ITERATIONS + 1)))
    return net, planes, prior


def evaluate(net: ProgressiveAutoencoder, planes: np.ndarray, images: list[np.ndarray]) -> list[float]:
    """Mean PSNR per iteration over validation crops (the decoder as the codec runs it)."""
    psnrs = np.zeros(ITERATIONS)
    with torch.no_grad():
        for a in images:
            x = to_tensor(a[None])
            q = torch.round(net.latents(x))
            h = None
            for k in range(1, ITERATIONS + 1):
                y, h = net.decode_step(dequantize(q, planes, k), h, k)
                xh = torch.clamp(torch.round(net.synthesis(y) * 255), 0, 255) / 255
                psnrs[k - 1] += float(10 * torch.log10(1 / ((xh - x) ** 2).mean()))
    return [round(float(v), 3) for v in psnrs / len(images)]


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def prior_crops(photos: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The training crops the schedule and the priors are computed from (the same on resume)."""
    size = min(PRIOR_CROP, max(min(a.shape[:2]) for a in photos) // 8 * 8)  # small photos: smaller crops
    large = [a for a in photos if min(a.shape[:2]) >= size]
    return list(random_crops(large, PRIOR_CROPS, size, np.random.default_rng(seed + PRIOR_SEED)))


def train(data: Path, init: Path, out: Path, steps: int, minutes: float, crop: int, batch: int, seed: int,
          threads: int, resume: bool, recurrent_hidden: int, extra: Path | None, log=print) -> dict:
    ts = prepare(data, VAL_CROP, seed, resume, threads, log)
    photos = ts.photos
    if extra is not None and extra.is_dir():
        from dcomp.train.data import photos as load_photos, split
        extra_train, _ = split(extra)
        photos = photos + [a for a in load_photos(extra_train, log) if min(a.shape[:2]) >= crop]
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = out.with_name(out.stem + ".checkpoint.pt")
    if resume and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        planes, prior, curve, done = ck["planes"], ck["prior"], ck["curve"], ck["step"]
        runs = ck.get("runs") or [{"steps": [0, done], "seconds": curve[-1].get("seconds", 0)}]
        net = ProgressiveAutoencoder(planes, recurrent_hidden=recurrent_hidden)
        net.load_state_dict(ck["net"])
        log(f"resumed at step {done}")
    else:
        net, planes, prior = build_initial(init, prior_crops(photos, seed), recurrent_hidden, log)
        done, curve, runs = 0, [], []
        curve.append({"step": 0, "val_psnr": evaluate(net, planes, ts.val_images), "seconds": 0})
        log(f"untrained: validation PSNR per iteration: {_fmt(curve[-1]['val_psnr'])}")
    # The encoder stays as it started: the bits, the schedule and the priors depend on it.
    for n, p in net.named_parameters():
        p.requires_grad_(not n.startswith(ENCODER_PARAMETERS))
    decoder = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(decoder, lr=LEARNING_RATE)
    if resume and checkpoint.exists() and "opt" in ck:
        opt.load_state_dict(ck["opt"])
    first_step = done
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    start = time.time()
    last_save = start
    rng = np.random.default_rng(seed + done)
    try:
        while done < steps and (time.time() - start) < minutes * 60 and not stop["now"]:
            x = to_tensor(random_crops(photos, batch, crop, ts.rng))
            with torch.no_grad():
                q = torch.round(net.latents(x))
            chosen = set(rng.choice(ITERATIONS - 1, SYNTHESIZED_ITERATIONS - 1, replace=False) + 1) | {ITERATIONS}
            h, x_hats = None, []
            for k in range(1, max(chosen) + 1):
                y, h = net.decode_step(dequantize(q, planes, k), h, k)
                if k in chosen:
                    x_hats.append(net.synthesis(y))
            loss, _ = progress_loss(x, x_hats)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done % 50 == 0 or time.time() - last_save > 300:
                val = evaluate(net, planes, ts.val_images)
                curve.append({"step": done, "loss": float(loss.detach()), "val_psnr": val,
                              "seconds": round(time.time() - start, 1)})
                log(f"step {done}: loss {float(loss):.4f}, validation PSNR per iteration: {_fmt(val)}")
                ongoing = runs + [{"steps": [first_step, done], "seconds": round(time.time() - start, 1)}]
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "planes": planes, "prior": prior,
                            "curve": curve, "step": done, "runs": ongoing}, checkpoint)
                last_save = time.time()
    except KeyboardInterrupt:
        log("interrupted: saving")
    runs.append({"steps": [first_step, done], "seconds": round(time.time() - start, 1)})
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "planes": planes, "prior": prior,
                "curve": curve, "step": done, "runs": runs}, checkpoint)
    # Counted again with the coder as it is now (the encoder, hence the latents, never changed).
    layout = bitplane.Layout(planes, cnn_ae.channel_groups(), DC_CHANNELS)
    prior = count_priors(layout, latents_of(net, prior_crops(photos, seed)))
    record = {"method": "cnn-rnn-ae", "steps": done, "seconds_total": round(sum(r["seconds"] for r in runs), 1),
              "runs": runs, "crop": crop, "batch": batch, "seed": seed,
              "init": str(init), "data": str(data), "extra": str(extra) if extra else None,
              "curve": curve, "iterations": ITERATIONS}
    W.publish(out, lambda p: save_weights(net, planes, prior, p, {"init_model_id": W.load(init).model_id.hex()}),
              record)
    log(f"wrote {out}")
    return record
