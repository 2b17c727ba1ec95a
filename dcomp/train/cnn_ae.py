"""Train `cnn-ae` (random crops of photographs, with CIFAR-10 batches mixed in) and
`cnn-ae-ft` (the same network fine-tuned on larger crops of the photographs only).

One model learns all eight qualities at once: every item of a batch draws its own quality,
hence its own gains and lambda. Training stops after --steps or --minutes, whichever comes
first, and writes the weights (with the integer coding tables made from them), their
SHA-256 and the learning curve (validation bpp and PSNR on held-out photos against steps).
--resume continues from the weights in --out and appends to its curve.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from dcomp.methods import cnn_ae as M
from dcomp.entropy.laplace import likelihood
from dcomp.entropy.subband_model import lowpass_prediction
from dcomp.methods.cnn_ae import BLOCK
from dcomp.train.data import prepare, random_crops, to_tensor
from dcomp import weights as W
from dcomp.weights import publish

VAL_QUALITIES = (0, 3, 7)
VAL_CROP = 512
TABLE_FIT_CROPS, TABLE_FIT_SIZE, TABLE_FIT_LR = 32, 256, 0.05
TABLE_FIT_ITERATIONS = 300
TABLE_FIT_RANGE = 255  # values beyond are counted at the edge: rare, and only the fit sees them


def _cifar(folder: Path | None, log) -> np.ndarray | None:
    if folder is None:
        return None
    from dcomp.datasets import resolve_dataset
    # A folder holding the CIFAR-10 archive (as `dcomp bench --data-dir`), or the archive itself.
    spec, data_dir = ("cifar10", folder) if folder.is_dir() else (str(folder), None)
    _, images = resolve_dataset(spec, data_dir=data_dir, split="train", progress=False, on_note=lambda m: None)
    arr = np.stack([im.array for im in images])
    log(f"loaded {len(arr)} CIFAR-10 training images")
    return arr


def validate(model, val_images: list[np.ndarray]) -> dict:
    """Bits from the model's own likelihood of the rounded latents, PSNR of the decoded crop."""
    import torch
    out = {}
    with torch.no_grad():
        for q in VAL_QUALITIES:
            bpp, psnr = [], []
            for img in val_images:
                x = to_tensor(img[None])
                qi = torch.tensor([q])
                x_hat, bits = model(x, qi, rate_on="rounded")
                b = bits.sum() / (x.shape[2] * x.shape[3])
                x_hat = torch.clamp(x_hat, 0, 1)
                mse = float(((torch.round(x_hat * 255) - x * 255) ** 2).mean())
                bpp.append(float(b))
                psnr.append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
            out[f"q{q + 1}"] = {"bpp": round(float(np.mean(bpp)), 4), "psnr": round(float(np.mean(psnr)), 3)}
    return out


def fit_tables(model, photos: list[np.ndarray], rng: np.random.Generator, iterations: int,
               crops: int | None = None, size: int | None = None, log=print) -> float:
    """Fit the entropy model alone to the rounded coefficients of the current transform at
    every quality (what coding sees, not training's noise); returns the final bits per pixel.
    Before training, so the transform does not first learn from arbitrary tables; after it,
    so the stored tables match rounding. Works on each table's histogram of values, so an
    iteration costs tables x values, not one gather per coefficient."""
    import torch
    crops = TABLE_FIT_CROPS if crops is None else crops
    size = min(TABLE_FIT_SIZE if size is None else size,
               min(min(p.shape[:2]) for p in photos) // BLOCK * BLOCK)  # small photos: smaller crops
    x = to_tensor(random_crops(photos, crops, size, rng))
    entropy = model.entropy
    span = 2 * TABLE_FIT_RANGE + 1
    counts = np.zeros(entropy.layout.tables * span)
    with torch.no_grad():
        for q in range(M.QUALITIES):
            qi = torch.full((len(x),), q)
            y = [torch.round(b) for b in model.analysis(x, qi)]
            coded = [y[0] - lowpass_prediction(y[0])] + y[1:]
            for v, t in zip(coded, entropy.table_indices(y, qi)):
                cell = t.numpy().ravel() * span + np.clip(v.numpy().ravel(), -TABLE_FIT_RANGE, TABLE_FIT_RANGE) \
                    + TABLE_FIT_RANGE
                counts += np.bincount(cell.astype(np.int64), minlength=len(counts))
    counts = torch.from_numpy(counts.reshape(entropy.layout.tables, span))
    used = counts.sum(1) > 0
    values = torch.arange(-TABLE_FIT_RANGE, TABLE_FIT_RANGE + 1, dtype=torch.float64)[None, :]
    opt = torch.optim.Adam(entropy.parameters(), lr=TABLE_FIT_LR)
    pixels = len(x) * size * size * M.QUALITIES
    bpp = float("nan")
    for i in range(iterations):
        p = likelihood(values, entropy.log_scales[used].double()[:, None, :], entropy.mix_logit[used].double()[:, None])
        bits = -(counts[used] * torch.log2(p)).sum() / pixels
        opt.zero_grad(set_to_none=True)
        bits.backward()
        opt.step()
        bpp = float(bits.detach())
        if i % 50 == 0 or i == iterations - 1:
            log(f"table fit {i}: {bpp:.4f} bpp (mean over qualities)")
    return bpp


def _param_groups(model, scale: float):
    groups = {"colour": [], "lifting": [], "post": [], "quantizer": [], "entropy": []}
    for name, p in model.named_parameters():
        if name == "transform.colour":
            groups["colour"].append(p)
        elif name.startswith("transform."):
            groups["lifting"].append(p)
        elif name.startswith("entropy."):
            groups["entropy"].append(p)
        elif name.startswith("post."):
            groups["post"].append(p)
        else:
            groups["quantizer"].append(p)
    lrs = {"colour": 1e-4, "lifting": 5e-4, "post": 1e-3, "quantizer": 3e-3, "entropy": 1e-2}
    return [{"params": ps, "lr": lrs[k] * scale, "name": k} for k, ps in groups.items()]


def train(data_dir: Path, out: Path, extra: Path | None = None, cifar_dir: Path | None = None, init: Path | None = None,
          steps: int = 100000, minutes: float = 60.0, crop: int = 128, batch: int = 8,
          cifar_every: int = 4, lr_scale: float = 1.0, val_every: int = 250, seed: int = 0,
          resume: bool = False, threads: int = 2, method: str = "cnn-ae", log=print) -> dict:
    import torch

    data = prepare(data_dir, VAL_CROP, seed, resume, threads, log, extra, multiple=BLOCK)
    train_paths, val_paths, photos, val_images, rng = (data.train_paths, data.val_paths, data.photos,
                                                       data.val_images, data.rng)
    photos = [p for p in photos if min(p.shape[:2]) >= crop]  # crops are whole low-pass samples
    val_images = [v for v in val_images if min(v.shape[:2]) >= BLOCK]
    if not photos:
        raise ValueError(f"no training photo is at least {crop} pixels on each side")
    if not val_images:
        raise ValueError(f"no held-out photo is at least {BLOCK} pixels on each side")
    cifar = _cifar(cifar_dir, log)

    model = M.build_model()
    record_path = out.with_name(out.stem + ".train.json")
    record = {"method": method, "curve": [], "runs": []}
    start_step = 0
    source = out if resume and out.exists() else init
    if source is not None:
        model = M.build_model(W.load(source))
        log(f"starting from {source}")
        if resume and record_path.exists():
            record = json.loads(record_path.read_text())
            start_step = record["curve"][-1]["step"] if record["curve"] else 0
    else:  # the untrained transform: its tables first, so the curve starts at the classical codec
        record["initial_table_fit_bpp"] = fit_tables(model, photos, rng, TABLE_FIT_ITERATIONS, log=log)
    model.train()
    opt = torch.optim.Adam(_param_groups(model, lr_scale))

    t0 = time.time()
    # Curve times count training seconds across resumed runs.
    offset = record["curve"][-1]["seconds"] if record["curve"] else 0.0
    step = start_step
    deadline = t0 + minutes * 60
    last_log = t0
    run_losses = []
    if not record["curve"] or record["curve"][-1]["step"] != step:
        record["curve"].append({"step": step, "seconds": 0.0, **validate(model, val_images)})
        log(f"step {step}: {record['curve'][-1]}")
    try:  # Ctrl-C stops training early but still saves the weights and the curve
        while step < start_step + steps and time.time() < deadline:
            if cifar is not None and cifar_every and step % cifar_every == cifar_every - 1:
                idx = rng.integers(0, len(cifar), batch * 8)
                imgs = cifar[idx]
                flip = rng.random(len(idx)) < 0.5
                imgs[flip] = imgs[flip][:, :, ::-1]
            else:
                imgs = random_crops(photos, batch, crop, rng)
            x = to_tensor(imgs)
            q = torch.from_numpy(rng.integers(0, M.QUALITIES, len(x)))
            loss, bpp, mse = M.rd_loss(x, *model(x, q), q)
            loss = loss.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            run_losses.append(float(loss.detach()))
            if time.time() - last_log > 60:
                log(f"step {step}: loss {np.mean(run_losses[-100:]):.4f} ({(time.time() - t0) / (step - start_step):.2f} s/step)")
                last_log = time.time()
            if step % val_every == 0:
                elapsed = offset + time.time() - t0
                record["curve"].append({"step": step, "seconds": round(elapsed, 1), **validate(model, val_images)})
                log(f"step {step}: {record['curve'][-1]}")
                _save(model, out, record, method)
    except KeyboardInterrupt:
        log(f"interrupted at step {step}: saving")
    if step > start_step:
        record["final_table_fit_bpp"] = fit_tables(model, photos, rng, TABLE_FIT_ITERATIONS // 2, log=log)
    if record["curve"][-1]["step"] == step and step > start_step:
        record["curve"].pop()  # measured again below, with the refitted tables
    if record["curve"][-1]["step"] != step:
        record["curve"].append({"step": step, "seconds": round(offset + time.time() - t0, 1),
                                **validate(model, val_images)})
    record["seconds_total"] = round(offset + time.time() - t0, 1)
    record["runs"].append({"data": str(data_dir), "extra": str(extra) if extra else None, "cifar": str(cifar_dir) if cifar_dir else None,
                           "init": str(init) if init else None,
                           "init_sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest() if init else None,
                           "resume": resume, "steps": step - start_step,
                           "lambdas": list(M.LAMBDAS), "crop": crop, "batch": batch, "cifar_every": cifar_every,
                           "lr_scale": lr_scale,
                           "threads": threads, "seconds": round(time.time() - t0, 1),
                           "train_images": len(train_paths), "val_images": len(val_paths)})
    return _save(model, out, record, method)


def _save(model, out: Path, record: dict, method: str) -> dict:
    publish(out, lambda path: M.save_weights(model, path, method), record)
    return record
