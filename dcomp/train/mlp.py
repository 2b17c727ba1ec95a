"""Train the `mlp` predictor: a float MLP per channel group, then quantized to the
fixed-point IntegerNet that the codec runs.

Samples are single pixels drawn at random from the training photographs, with exactly the
integer inputs the codec computes (`gather_inputs`), so training sees what coding sees.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dcomp.imageio import load_rgb
from dcomp.methods import mlp_predictor as P
from dcomp.train.data import split
from dcomp.weights import publish

# (channel predicted, its prior channels) per network; net 0 also serves L and alpha, so it
# learns from every colour channel.
NET_TASKS = {0: [(1, []), (0, []), (2, [])], 1: [(0, [1]), (2, [1])], 2: [(2, [1, 0])]}
INPUT_SCALE = 32.0


def sample_pixels(image: np.ndarray, n: int, rng: np.random.Generator) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if rng.random() < 0.5:  # portrait images are coded transposed: learn both orientations
        image = np.ascontiguousarray(image.transpose(1, 0, 2))
    h, w, _ = image.shape
    stack = P.pad_planes(image)
    pw = stack.shape[2]
    ys = rng.integers(1, h, n)
    xs = rng.integers(1, w, n)
    flat = (ys + P.PAD_TOP) * pw + xs + P.PAD_LEFT
    out = {}
    for net, tasks in NET_TASKS.items():
        xs_all, ys_all = [], []
        for channel, priors in tasks:
            x, ref = P.gather_inputs(stack, flat, channel, priors)
            xs_all.append(x)
            ys_all.append(image[:, :, channel].ravel()[(ys * w + xs)].astype(np.int64) - ref)
        out[net] = (np.concatenate(xs_all), np.concatenate(ys_all))
    return out


def build_set(paths: list[Path], per_image: int, seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    parts: dict[int, list] = {k: [] for k in NET_TASKS}
    for path in paths:
        for net, xy in sample_pixels(load_rgb(path), per_image, rng).items():
            parts[net].append(xy)
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in parts.items()}


def make_model(n_in: int, hidden: tuple[int, int]):
    import torch.nn as nn
    return nn.Sequential(nn.Linear(n_in, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                         nn.Linear(hidden[1], 1))


def loss_fn(pred, target):
    """L1: the residuals are near-Laplacian, whose code length grows with |error|."""
    return (pred - target).abs().mean()


def _shift_for(max_abs: float, limit: int = P.WEIGHT_MAX, cap: int = 40) -> int:
    return int(min(cap, np.floor(np.log2(limit / max(max_abs, 1e-12)))))


def quantize(model) -> P.IntegerNet:
    """Float model (inputs /INPUT_SCALE, output *INPUT_SCALE) to fixed point."""
    w1 = model[0].weight.detach().double().numpy() / INPUT_SCALE
    b1 = model[0].bias.detach().double().numpy()
    w2 = model[2].weight.detach().double().numpy()
    b2 = model[2].bias.detach().double().numpy()
    wh = model[4].weight.detach().double().numpy()[0] * INPUT_SCALE
    bh = float(model[4].bias.detach().double().numpy()[0]) * INPUT_SCALE
    s1 = max(P.ACT_BITS, _shift_for(np.abs(w1).max()))
    s2 = _shift_for(np.abs(w2).max())
    sh = _shift_for(np.abs(wh).max())
    a = P.ACT_BITS
    return P.IntegerNet(np.round(w1 * 2.0**s1).astype(np.int64), np.round(b1 * 2.0**s1).astype(np.int64), s1,
                        np.round(w2 * 2.0**s2).astype(np.int64), np.round(b2 * 2.0**(s2 + a)).astype(np.int64), s2,
                        np.round(wh * 2.0**sh).astype(np.int64), int(round(bh * 2.0**(sh + a))), sh)


def integer_mae(net: P.IntegerNet, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(net.head(net.hidden(x.astype(np.float64))) - y).mean())


def train(data_dir: Path, out: Path, steps: int = 6000, hidden: tuple[int, int] = (32, 32),
          batch: int = 2048, seed: int = 0, resume: bool = False, log=print) -> dict:
    import torch

    # Small batches of a small MLP: one thread avoids OpenMP spin-waiting against other work.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train_paths, val_paths = split(data_dir)
    log(f"{len(train_paths)} training images, {len(val_paths)} validation images")
    t0 = time.time()
    train_set = build_set(train_paths, 40000, seed)
    val_set = build_set(val_paths, 20000, seed + 1)
    log(f"sampled pixels in {time.time() - t0:.1f}s")
    arrays: dict[str, np.ndarray] = {}
    curve: dict[str, list] = {}
    for net_id, (x, y) in train_set.items():
        model = make_model(x.shape[1], hidden)
        if resume and out.exists():
            prev = np.load(out)
            model.load_state_dict({k[len(f"float{net_id}_"):]: torch.from_numpy(prev[k])
                                   for k in prev.files if k.startswith(f"float{net_id}_")})
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
        xt = torch.from_numpy(x).float() / INPUT_SCALE
        yt = torch.from_numpy(y).float()
        xv, yv = val_set[net_id]
        gen = torch.Generator().manual_seed(seed + net_id)
        curve[str(net_id)] = []
        for step in range(1, steps + 1):
            idx = torch.randint(0, len(xt), (batch,), generator=gen)
            loss = loss_fn(model(xt[idx])[:, 0] * INPUT_SCALE, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 1000 == 0 or step == steps:
                net = quantize(model)
                val = integer_mae(net, xv, yv)
                curve[str(net_id)].append({"step": step, "train_l1": float(loss.detach()), "val_l1_integer": val,
                                           "val_l1_med": float(np.abs(yv).mean())})
                log(f"net {net_id} step {step}: train L1 {float(loss.detach()):.3f}, val L1 (integer net) {val:.3f}, "
                    f"MED alone {float(np.abs(yv).mean()):.3f}")
        arrays.update(quantize(model).as_arrays(f"n{net_id}_"))
        arrays.update({f"float{net_id}_{k}": v.detach().numpy() for k, v in model.state_dict().items()})
    record = {"data": str(data_dir), "train_images": len(train_paths), "val_images": len(val_paths),
              "steps": steps, "hidden": list(hidden), "batch": batch, "seed": seed,
              "seconds": round(time.time() - t0, 1), "curve": curve}
    publish(out, lambda path: np.savez(path, **arrays), record)
    return record
