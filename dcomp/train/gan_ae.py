"""Train the decoders of `gan-ae` (L2 + Wasserstein critic with gradient penalty) and `gan-ae-dc`
(L2 + DCGAN non-saturating loss), fine-tuned from `cnn-ae-ft`.

Only the decoder learns: the analysis transform, the quantizer gains and the entropy model stay
those of cnn-ae-ft, so a GAN method writes exactly cnn-ae-ft's bits and any of the decoders can
read any of the files. Its loss is the distortion term of cnn-ae-ft's own training objective
(lambda_q * MSE, which keeps colours and structure) plus beta_q times the adversarial term from
a patch critic on the reconstructions.

beta_q, one per quality, is steered on held-out photographs: after each validation it shrinks
when the decoder has given up more than --max-psnr-drop dB against cnn-ae-ft at that quality,
and grows when it has given up less than half of that, so the PSNR cost stays bounded at every
rate while the critic pushes for texture (one beta for all qualities cost 1.5 dB on CIFAR-10 at
the highest quality and 0.2 dB at the lowest, where texture matters most). The critic is saved beside the weights (for --resume) and is never part
of what decoding loads.
"""
from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import numpy as np

from dcomp import weights as W
from dcomp import metrics, perceptual
from dcomp.methods import cnn_ae as M
from dcomp.train.data import prepare, random_crops, to_tensor
from dcomp.weights import companions, publish

LOSSES = {"gan-ae": "wgan-gp", "gan-ae-dc": "dcgan"}
# What the synthesis reads: its copy of the lifting steps (the encoder keeps cnn-ae-ft's), the
# dequantization steps and offsets, and the post filter.
DECODER_PREFIXES = ("transform.", "log_step", "recon_offset", "post.")
VAL_QUALITIES = tuple(range(M.QUALITIES))
PERCEPTUAL_QUALITIES = (0, 1)  # the two lowest, where a GAN decoder matters most
VAL_CROP = 256
GRADIENT_PENALTY = 10.0
BETA_STEP = 2.0  # factor by which the controller moves beta
SPILL_FACTOR = 2.0  # any quality this far over budget lowers every beta
BETA_RANGE = (1e-4, 10.0)  # above 10 the critic at low rates overrode the distortion term everywhere
CRITIC_WIDTHS = (32, 64, 128)
DIFFERENCE_GAIN = 8.0  # the critic's view of the difference from the reference reconstruction


def is_decoder_parameter(name: str) -> bool:
    return name.startswith(DECODER_PREFIXES)


def build_critic():
    """A patch critic: strided 4x4 convolutions to a score per ~30-pixel patch of the image.

    It is conditioned on the latents through cnn-ae-ft's reconstruction from them: it sees the
    candidate and the candidate's difference from that reconstruction, amplified, so what a
    real photo has and a reconstruction lacks (detail, texture) is in plain view. A critic on
    the pixels alone barely learned to tell them apart (its loss stayed near 2 ln 2)."""
    import torch
    nn = torch.nn
    layers, channels = [], 6
    for width in CRITIC_WIDTHS:
        layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = width
    layers.append(nn.Conv2d(channels, 1, 3, padding=1))
    return nn.Sequential(*layers)


def _critic_input(candidate, reference):
    import torch
    return torch.cat([2 * candidate - 1, DIFFERENCE_GAIN * (candidate - reference)], 1)


def _critic_losses(loss: str, critic, real, fake, reference):
    """(critic loss, a function giving the generator's adversarial loss per item) for one batch;
    reference: cnn-ae-ft's reconstruction of the same latents (no gradient)."""
    import torch
    import torch.nn.functional as F

    d_real, d_fake = critic(_critic_input(real, reference)), critic(_critic_input(fake.detach(), reference))
    if loss == "wgan-gp":
        # The penalty holds the critic to slope 1 on what it sees (its 6-channel input), as WGAN-GP
        # intends; on the candidate alone, the amplified difference made the critic nearly flat.
        mix = torch.rand(real.shape[0], 1, 1, 1)
        between = _critic_input(mix * real + (1 - mix) * fake.detach(), reference).requires_grad_(True)
        grad, = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        critic_loss = d_fake.mean() - d_real.mean() + GRADIENT_PENALTY * penalty
        return critic_loss, lambda: -critic(_critic_input(fake, reference)).mean((1, 2, 3))
    critic_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return critic_loss, lambda: F.softplus(-critic(_critic_input(fake, reference))).mean((1, 2, 3))


def validate(net, base, val_images: list[np.ndarray]) -> dict:
    """PSNR of the decoder being trained and of cnn-ae-ft's, on the same rounded latents, and at
    the lowest qualities the perceptual measures of both (HaarPSI: higher is better; SWD of
    patches: lower is closer to the original's textures)."""
    import torch
    out = {}
    with torch.no_grad():
        for q in VAL_QUALITIES:
            scores: dict[str, list[float]] = {}
            for img in val_images:
                x = to_tensor(img[None])
                qi = torch.tensor([q])
                y = [torch.round(b) for b in base.analysis(x, qi)]
                for who, decoded in (("", net.synthesis(y, qi)), ("base_", base.synthesis(y, qi))):
                    pixels = _pixels(decoded)
                    scores.setdefault(who + "psnr", []).append(metrics.psnr(img, pixels))
                    if q in PERCEPTUAL_QUALITIES:
                        scores.setdefault(who + "haarpsi", []).append(perceptual.haarpsi(img, pixels))
                        scores.setdefault(who + "swd", []).append(perceptual.swd_patches(img, pixels))
            point = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
            point["psnr_drop"] = round(point["base_psnr"] - point["psnr"], 3)
            out[f"q{q + 1}"] = point
    return out


def _pixels(x) -> np.ndarray:
    import torch
    return torch.clamp(torch.round(x[0] * 255), 0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _steer(betas: list[float], drops: list[float], max_drop: float) -> list[float]:
    """Each quality's beta by its own PSNR cost, and all of them down while any quality is far
    over budget: the decoder is shared, so a strong critic at low rates also costs the high
    rates (gan-ae-dc lost 2.4 dB at quality 8 with its own beta at the floor)."""
    spill = max(drops) > SPILL_FACTOR * max_drop
    out = []
    for beta, drop in zip(betas, drops):
        if drop > max_drop or spill:
            beta /= BETA_STEP
        elif drop < max_drop / 2 and max(drops) <= max_drop:
            beta *= BETA_STEP
        out.append(float(min(max(beta, BETA_RANGE[0]), BETA_RANGE[1])))
    return out


def _betas(value, qualities: int) -> list[float]:
    """A curve's beta: one per quality (older curves hold one for all)."""
    return [float(value)] * qualities if isinstance(value, (int, float)) else [float(v) for v in value]


def save_decoder(net, path: Path, meta: dict) -> None:
    """The decoder's float parameters and what it decodes (no critic, no encoder)."""
    W.write_npz(path, {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()
                       if is_decoder_parameter(k)}, {}, meta)


def critic_path(out: Path) -> Path:
    return out.with_name(out.stem + ".critic.npz")


def train(data_dir: Path, out: Path, method: str, init: Path, steps: int = 100000, minutes: float = 60.0,
          crop: int = 128, batch: int = 4, beta: float | None = None, max_psnr_drop: float = 0.75,
          lr_scale: float = 1.0, val_every: int = 100, seed: int = 0, resume: bool = False, threads: int = 1,
          log=print) -> dict:
    import torch

    loss_kind = LOSSES[method]
    data = prepare(data_dir, VAL_CROP, seed, resume, threads, log, multiple=M.BLOCK)
    train_paths, val_paths, photos, val_images, rng = (data.train_paths, data.val_paths, data.photos,
                                                       data.val_images, data.rng)
    photos = [p for p in photos if min(p.shape[:2]) >= crop]  # crops are whole low-pass samples
    val_images = [v for v in val_images if min(v.shape[:2]) >= M.BLOCK]
    if not photos or not val_images:
        raise ValueError(f"need training photos of at least {crop} and held-out photos of at least {M.BLOCK} "
                         "pixels on each side")

    base_weights = M.Weights(init)
    base = base_weights.net("cpu")  # frozen: the encoder, and the reference decoder of validation
    net = M.build_model(base_weights.file)
    critic = build_critic()
    record = {"method": method, "loss": loss_kind, "curve": [], "runs": []}
    start_step = 0
    if resume and out.exists():
        state = net.state_dict()
        state.update({k: torch.from_numpy(v) for k, v in W.load(out).params.items()})
        net.load_state_dict(state)
        if critic_path(out).exists():
            critic.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(critic_path(out)).items()})
        record = json.loads(companions(out)[2].read_text())
        start_step = record["curve"][-1]["step"]
        beta = record["curve"][-1]["beta"] if beta is None else beta
        log(f"resuming {out} at step {start_step}")
    betas = _betas((0.01 if loss_kind == "wgan-gp" else 0.03) if beta is None else beta, M.QUALITIES)
    net.requires_grad_(False)
    decoder = [p for n, p in net.named_parameters() if is_decoder_parameter(n)]
    for p in decoder:
        p.requires_grad_(True)
    net.train()
    opt_g = torch.optim.Adam(decoder, lr=5e-5 * lr_scale, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=4e-4 * lr_scale, betas=(0.5, 0.9))
    lambdas = torch.tensor(M.LAMBDAS)

    meta = {"method": method, "loss": loss_kind, "base_method": "cnn-ae-ft",
            "bitstream_model_id": base_weights.model_id.hex()}

    def save() -> None:
        publish(out, lambda path: save_decoder(net, path, meta), record)
        state = {k: v.detach().numpy() for k, v in critic.state_dict().items()}
        tmp = critic_path(out).with_name(f".{critic_path(out).stem}.tmp.npz")
        np.savez(tmp, **state)
        tmp.replace(critic_path(out))

    t0 = time.time()
    offset = record["curve"][-1]["seconds"] if record["curve"] else 0.0
    step, last_log = start_step, t0
    deadline = t0 + minutes * 60
    critic_losses, adv_losses = [], []
    if not record["curve"]:
        record["curve"].append({"step": 0, "seconds": 0.0, "beta": betas, **validate(net, base, val_images)})
        log(f"step 0: {record['curve'][-1]}")
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)  # a kill saves as Ctrl-C does
    try:  # Ctrl-C stops early but still saves
        while step < start_step + steps and time.time() < deadline:
            x = to_tensor(random_crops(photos, batch, crop, rng))
            q = torch.from_numpy(rng.integers(0, M.QUALITIES, batch))
            with torch.no_grad():
                y = [torch.round(b) for b in base.analysis(x, q)]
                reference = base.synthesis(y, q)
            x_hat = net.synthesis(y, q)
            critic_loss, adversarial = _critic_losses(loss_kind, critic, x, x_hat, reference)
            opt_d.zero_grad(set_to_none=True)
            critic_loss.backward()
            opt_d.step()
            critic.requires_grad_(False)
            adv = adversarial()
            critic.requires_grad_(True)
            mse = ((x_hat - x) ** 2).mean((1, 2, 3)) * 255.0 ** 2
            loss = (lambdas[q] * mse + torch.tensor(betas)[q] * adv).mean()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder, 5.0)
            opt_g.step()
            step += 1
            critic_losses.append(float(critic_loss.detach()))
            adv_losses.append(float(adv.detach().mean()))
            if time.time() - last_log > 60:
                log(f"step {step}: critic {np.mean(critic_losses[-50:]):.4f}, adversarial "
                    f"{np.mean(adv_losses[-50:]):.4f}, beta {' '.join(f'{b:.3g}' for b in betas)} "
                    f"({(time.time() - t0) / (step - start_step):.2f} s/step)")
                last_log = time.time()
            if step % val_every == 0:
                point = validate(net, base, val_images)
                record["curve"].append({"step": step, "seconds": round(offset + time.time() - t0, 1), "beta": betas,
                                        "critic_loss": round(float(np.mean(critic_losses[-val_every:])), 5),
                                        "adversarial_loss": round(float(np.mean(adv_losses[-val_every:])), 5),
                                        **point})
                log(f"step {step}: {record['curve'][-1]}")
                betas = _steer(betas, [point[f"q{q + 1}"]["psnr_drop"] for q in range(M.QUALITIES)], max_psnr_drop)
                save()
    except KeyboardInterrupt:
        log(f"interrupted at step {step}: saving")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if record["curve"][-1]["step"] != step:
        record["curve"].append({"step": step, "seconds": round(offset + time.time() - t0, 1), "beta": betas,
                                **validate(net, base, val_images)})
    record["seconds_total"] = round(offset + time.time() - t0, 1)
    record["runs"].append({"data": str(data_dir), "init": str(init),
                           "init_sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest(),
                           "resume": resume, "steps": step - start_step, "crop": crop, "batch": batch,
                           "max_psnr_drop": max_psnr_drop, "lr_scale": lr_scale, "threads": threads,
                           "seconds": round(time.time() - t0, 1), "train_images": len(train_paths),
                           "val_images": len(val_paths)})
    save()
    return record
