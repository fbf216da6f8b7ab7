"""Stage 3: the knowledge-alignment network A(z_t, t, z_context) (MSE, EMA weights).

Trains on the LDM run's latent cache (`--ldm runs/ldm`, its `latents.pt` and its
`latent_scale`): for random windows and sub-crops, z_t ~ q(z_t | z_0) of the future latents at
t ~ U{0..T-1}, and the target is each future frame's mean rain rate [mm h-1] over the sub-crop
divided by `config.intensity_scale_mm_h` (exact, from the cache's 8x8 block means). For a
motion-aware LDM (`diffusion.extrapolation`) the noised quantity is what its sampler diffuses,
the scaled residual from the extrapolation latents, and the net also reads those latents; it
needs the LDM run's config (`residual_scale`) and cache, not its weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.alignment import AlignmentNet
from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.residual import ResidualMap
from models.schedulers import NoiseSchedule
from models.training.common import (
    EMA,
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
)
from models.training.latent_cache import LatentCache, WindowBatch, WindowSampler
from models.training.ldm import CACHE_NAME, VALIDATION_CACHE_NAME

DEFAULTS = {"steps": 1500, "batch_size": 16, "crop_px": 128, "lr": 5e-4}
WARMUP_STEPS = 100
VALIDATION_BATCHES = 4
LOG_FIELDS = ["step", "time_s", "lr", "loss", "val_loss", "val_rel_error"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ldm", default="runs/ldm", help="LDM run folder (cache + config)")
    parser.add_argument("--ema-decay", type=float, default=None, help="default: the config's")


def alignment_loss(
    network: torch.nn.Module,
    schedule: NoiseSchedule,
    batch: WindowBatch,
    config: ModelConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE, mean relative error of the implied mm/h) of one batch.

    The relative error is |pred - target| / max(target, 0.1 mm/h) in mm/h, averaged (logged
    only; the loss is the MSE in `intensity_scale_mm_h` units).
    """
    device = next(network.parameters()).device
    latents = batch.latents.to(device) * config.latent_scale
    context, future = latents[:, : config.frames_in], latents[:, config.frames_in :]
    target = batch.future_mean_mm_h.to(device) / config.intensity_scale_mm_h
    inputs: tuple[torch.Tensor, ...] = ()
    if config.diffusion.extrapolation:
        # a motion-aware net reads the sampler's state: the diffused residual, and the
        # extrapolation latents
        if batch.extrapolation is None:
            raise ValueError("a motion-aware model trains on a cache with extrapolations")
        extrapolation = batch.extrapolation.to(device) * config.latent_scale
        residual = ResidualMap.for_config(config.diffusion, context, extrapolation)
        future, inputs = residual.to_diffused(future), (extrapolation,)
    count = latents.shape[0]
    timesteps = torch.randint(
        0, schedule.num_train_steps, (count,), generator=generator, device=device
    )
    noise = torch.randn(future.shape, generator=generator, device=device)
    noisy = schedule.add_noise(future, noise, timesteps)
    prediction = network(noisy, timesteps, context, *inputs)
    loss = F.mse_loss(prediction, target)
    scale = config.intensity_scale_mm_h
    relative = (prediction - target).abs() * scale / (target * scale).clamp_min(0.1)
    return loss, relative.mean().detach()


def train(args: argparse.Namespace) -> int:
    """Run (or resume) the alignment stage; writes `<out>/checkpoint.pt`, `<out>/log.csv`."""
    device = select_device(args.device, args.threads)
    ldm_run = Path(args.ldm)
    run_dir = Path(args.out or "runs/alignment")
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    latent_px = (args.crop_px or DEFAULTS["crop_px"]) // VAE_DOWNSAMPLE_FACTOR
    base_lr = args.lr or DEFAULTS["lr"]

    # the LDM run fixes the latent scale; its config may be a different preset than --config
    state = load_checkpoint(run_dir, device) if args.resume else None
    source = state if state is not None else load_checkpoint(ldm_run, "cpu")
    config = ModelConfig.from_dict(source["config"])
    if config.name != args.config:
        raise SystemExit(f"--config {args.config} but the LDM run used {config.name}")
    cache = LatentCache.load(ldm_run / CACHE_NAME)
    val_path = ldm_run / VALIDATION_CACHE_NAME
    val_cache = LatentCache.load(val_path) if val_path.exists() else None

    rng = np.random.default_rng(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    network = seeded_init(args.seed, lambda: AlignmentNet(config)).to(device)
    ema = EMA(network, args.ema_decay or config.diffusion.ema_decay)
    schedule = NoiseSchedule(config.diffusion)
    optimiser = torch.optim.AdamW(network.parameters(), lr=base_lr, weight_decay=0.0)

    start_step, elapsed_s = 0, 0.0
    if state is not None:
        network.load_state_dict(state["alignment"])
        ema.load_state_dict(state["ema"])
        if "optimiser" in state:  # slim checkpoints (shipped with the model) have none
            optimiser.load_state_dict(state["optimiser"])
        restore_rng(state["rng"], generator, rng)
        start_step, elapsed_s = state["step"], state["elapsed_s"]

    sampler = WindowSampler(cache, config.frames_in, config.frames_out)
    log = CSVLog(run_dir / "log.csv", LOG_FIELDS, start_step if args.resume else None)
    deadline, checkpoint_due = Deadline(args.max_minutes), Every(args.checkpoint_every_s)
    bar = progress_bar(steps, start_step, "alignment")
    t0 = time.monotonic() - elapsed_s
    ema_network = seeded_init(args.seed, lambda: AlignmentNet(config)).to(device)

    def validate() -> tuple[float | None, float | None]:
        if val_cache is None:
            return None, None
        ema.copy_to(ema_network)
        val_sampler = WindowSampler(val_cache, config.frames_in, config.frames_out)
        val_rng = np.random.default_rng(args.seed)
        val_generator = torch.Generator(device=device).manual_seed(args.seed)
        losses, errors = [], []
        with evaluating(ema_network):
            for _ in range(VALIDATION_BATCHES):
                batch = val_sampler.batch(batch_size, latent_px, val_rng)
                loss, rel = alignment_loss(ema_network, schedule, batch, config, val_generator)
                losses.append(loss.item())
                errors.append(rel.item())
        return float(np.mean(losses)), float(np.mean(errors))

    def checkpoint(step: int) -> tuple[float | None, float | None]:
        val_loss, val_rel = validate()
        save_checkpoint(
            run_dir,
            {
                "stage": "alignment",
                "step": step,
                "elapsed_s": time.monotonic() - t0,
                "config": config.to_dict(),
                "alignment": network.state_dict(),
                "ema": ema.state_dict(),
                "optimiser": optimiser.state_dict(),
                "rng": rng_state(generator, rng),
                "args": {k: v for k, v in vars(args).items() if k != "func"},
                "val_loss": val_loss,
                "val_rel_error": val_rel,
            },
        )
        return val_loss, val_rel

    step = start_step
    network.train()
    stop = min(steps, args.until_step or steps)
    while step < stop:
        lr = cosine_lr(step, steps, base_lr, WARMUP_STEPS)
        set_lr(optimiser, lr)
        loss, _ = alignment_loss(
            network, schedule, sampler.batch(batch_size, latent_px, rng), config, generator
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        ema.update(network)
        step += 1
        row = {"step": step, "time_s": round(time.monotonic() - t0, 1), "lr": lr}
        row["loss"] = loss.item()
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        bar.update(1)
        if step == stop or deadline.expired() or checkpoint_due():
            row["val_loss"], row["val_rel_error"] = checkpoint(step)
            log.write(row)
            if deadline.expired():
                break
        elif step % args.log_every == 0:
            log.write(row)
    bar.close()
    log.close()
    print(f"alignment: stopped at step {step}/{steps}, checkpoint in {run_dir}")
    return 0
