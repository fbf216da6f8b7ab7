"""Stage 1: the frame-wise VAE (pixel L1 + KL + PatchGAN hinge loss after a warm-up).

Trains on random single-frame crops of every frame of the training events (`models.data`),
normalised with `models.units.normalise_rain`. The adversarial term switches on at
`disc_start_fraction * steps`. Validation: the reconstruction MAE [mm h-1] of fixed crops of
the held-out events, at every checkpoint.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.data import FrameCropSampler, list_events, split_events
from models.discriminator import PatchDiscriminator
from models.training.common import (
    CSVLog,
    Deadline,
    Every,
    cosine_lr,
    evaluating,
    load_checkpoint,
    progress_bar,
    restore_rng,
    rng_state,
    save_checkpoint,
    seeded_init,
    select_device,
    set_lr,
    stage_config,
)
from models.units import denormalise_rain, normalise_rain
from models.vae import FrameVAE
from models.vae_loss import VAELossConfig, discriminator_loss, vae_generator_loss

DEFAULTS = {"steps": 4000, "batch_size": 16, "crop_px": 128, "lr": 5e-4}
WARMUP_STEPS = 100
VALIDATION_CROPS = 32
LOG_FIELDS = [
    "step", "time_s", "lr", "loss", "rec", "pixel_mean", "kl", "gan", "gan_weight", "disc",
    "val_mae_mm_h",
]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disc-start-fraction",
        type=float,
        default=0.7,
        help="fraction of --steps after which the adversarial loss is on (default 0.7)",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        help="VAE run folder whose weights (VAE and discriminator) start this run; its step "
        "count and optimiser do not carry over",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="train the decoder only, the encoder frozen: the latents do not change, so a "
        "denoiser trained on them stays valid",
    )
    parser.add_argument(
        "--decoder-layers",
        type=int,
        default=None,
        help="with --decoder-only: a decoder of this many resnets per level (a cheaper one, "
        "say); the --init-from weights whose name and shape still fit are kept, the rest start "
        "fresh",
    )


def _load_fitting(vae: FrameVAE, weights: dict[str, torch.Tensor]) -> None:
    """Load the `weights` whose name and shape fit `vae` (all of them unless the decoder's
    shape changed, `--decoder-layers`); the encoder must fit whole, or its latents change."""
    own = vae.state_dict()
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    encoder = [k for k in own if k.startswith("encoder.")]
    if missing := [k for k in encoder if k not in fitting]:
        raise SystemExit(f"--init-from: the encoder does not fit this config ({missing[:3]} ...)")
    vae.load_state_dict(fitting, strict=False)
    if len(fitting) < len(own):
        print(f"init: {len(fitting)} of {len(own)} VAE tensors from --init-from, the rest fresh")


def _validation_batch(events, crop_px: int, seed: int) -> np.ndarray:
    """Fixed held-out crops `(N, 1, crop, crop)` [mm h-1]: the same for every checkpoint."""
    sampler = FrameCropSampler(events, crop_px, np.random.default_rng(seed))
    return sampler.batch(VALIDATION_CROPS)


def validation_mae_mm_h(vae: FrameVAE, rain_mm_h: np.ndarray, rain_max_mm_h: float) -> float:
    """Reconstruction MAE [mm h-1] of `rain_mm_h` `(N, 1, H, W)` through the posterior mode."""
    device = next(vae.parameters()).device
    frames = torch.from_numpy(normalise_rain(rain_mm_h, rain_max_mm_h)).to(device)
    with evaluating(vae):
        reconstruction, _ = vae(frames, sample_posterior=False)
    recon_mm_h = denormalise_rain(reconstruction, rain_max_mm_h).cpu().numpy()
    return float(np.abs(recon_mm_h - rain_mm_h).mean())


def train(args: argparse.Namespace) -> int:
    """Run (or resume) the VAE stage; writes `<out>/checkpoint.pt` and `<out>/log.csv`."""
    device = select_device(args.device, args.threads)
    run_dir = Path(args.out or "runs/vae")
    state = load_checkpoint(run_dir, device) if args.resume else None
    warm = load_checkpoint(Path(args.init_from), device) if args.init_from and not state else None
    cfg = stage_config(args.config, state or warm)
    if args.decoder_layers is not None and state is None:
        if not (args.decoder_only and warm is not None):
            raise SystemExit("--decoder-layers needs --decoder-only and --init-from")
        vae_cfg = replace(cfg.vae, decoder_layers_per_block=args.decoder_layers)
        cfg = cfg.replace(vae=vae_cfg)
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    crop_px = args.crop_px or DEFAULTS["crop_px"]
    base_lr = args.lr or DEFAULTS["lr"]

    train_events, val_events = split_events(list_events(args.data), args.validation)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    vae = seeded_init(args.seed, lambda: FrameVAE(cfg.vae)).to(device)
    discriminator = seeded_init(args.seed + 1, lambda: PatchDiscriminator(cfg.vae)).to(device)
    loss_cfg = VAELossConfig(
        pixel_loss="l1", disc_start_step=int(round(args.disc_start_fraction * steps))
    )
    # betas of the VQGAN/LDM autoencoder recipe: a short momentum suits the adversarial game
    if warm is not None:
        _load_fitting(vae, warm["vae"])
        discriminator.load_state_dict(warm["discriminator"])
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    opt_vae = torch.optim.Adam(trained, lr=base_lr, betas=(0.5, 0.9))
    opt_disc = torch.optim.Adam(discriminator.parameters(), lr=base_lr, betas=(0.5, 0.9))

    start_step, elapsed_s = 0, 0.0
    if state is not None:
        vae.load_state_dict(state["vae"])
        discriminator.load_state_dict(state["discriminator"])
        if "opt_vae" in state:  # slim checkpoints (shipped with the model) have none
            opt_vae.load_state_dict(state["opt_vae"])
            opt_disc.load_state_dict(state["opt_disc"])
        restore_rng(state["rng"], generator, rng)
        start_step, elapsed_s = state["step"], state["elapsed_s"]

    sampler = FrameCropSampler(train_events, crop_px, rng)
    val_rain = _validation_batch(val_events, crop_px, args.seed) if val_events else None
    log = CSVLog(run_dir / "log.csv", LOG_FIELDS, start_step if args.resume else None)
    deadline, checkpoint_due = Deadline(args.max_minutes), Every(args.checkpoint_every_s)
    bar = progress_bar(steps, start_step, "vae")
    t0 = time.monotonic() - elapsed_s

    def checkpoint(step: int) -> float | None:
        val_mae = (
            validation_mae_mm_h(vae, val_rain, cfg.rain_max_mm_h) if val_rain is not None else None
        )
        save_checkpoint(
            run_dir,
            {
                "stage": "vae",
                "step": step,
                "elapsed_s": time.monotonic() - t0,
                "config": cfg.to_dict(),
                "vae": vae.state_dict(),
                "discriminator": discriminator.state_dict(),
                "opt_vae": opt_vae.state_dict(),
                "opt_disc": opt_disc.state_dict(),
                "rng": rng_state(generator, rng),
                "args": {k: v for k, v in vars(args).items() if k != "func"},
                "val_mae_mm_h": val_mae,
            },
        )
        return val_mae

    step = start_step
    vae.train()
    if args.decoder_only:
        vae.encoder.eval()
    discriminator.train()
    stop = min(steps, args.until_step or steps)
    while step < stop:
        lr = cosine_lr(step, steps, base_lr, WARMUP_STEPS)
        set_lr(opt_vae, lr)
        set_lr(opt_disc, lr)
        frames = torch.from_numpy(normalise_rain(sampler.batch(batch_size), cfg.rain_max_mm_h))
        frames = frames.to(device)
        reconstruction, posterior = vae(frames, generator=generator)
        loss, logs = vae_generator_loss(
            frames, reconstruction, posterior, discriminator, vae.last_layer_weight, step, loss_cfg
        )
        opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        opt_vae.step()
        disc_value = 0.0
        if step >= loss_cfg.disc_start_step:
            # the generator pass above left gradients in the discriminator: clear them first
            opt_disc.zero_grad(set_to_none=True)
            disc = discriminator_loss(discriminator, frames, reconstruction)
            disc.backward()
            opt_disc.step()
            disc_value = disc.item()
        step += 1
        row = {"step": step, "time_s": round(time.monotonic() - t0, 1), "lr": lr, **logs}
        row["disc"] = disc_value
        bar.set_postfix(loss=f"{logs['loss']:.1f}", rec=f"{logs['pixel_mean']:.4f}", refresh=False)
        bar.update(1)
        if step == stop or deadline.expired() or checkpoint_due():
            row["val_mae_mm_h"] = checkpoint(step)
            log.write(row)
            if deadline.expired():
                break
        elif step % args.log_every == 0:
            log.write(row)
    bar.close()
    log.close()
    print(f"vae: stopped at step {step}/{steps}, checkpoint in {run_dir}")
    return 0
