"""Stage 2: the latent diffusion model (Earthformer-UNet denoiser, eps-MSE, EMA weights).

Needs a trained VAE run (`--vae runs/vae`). The first run encodes crop sequences of the training
events once (`latent_cache.py`, saved as `<out>/latents.pt`, reused by `--resume` and by the
alignment stage) and sets `config.latent_scale = 1 / std` of the cached latents and
`latent_min` / `latent_max`, their per-channel 0.1-99.9 % range (scaled), which the sampler
clamps to.
Each step cuts random windows (7 context + 12 future frames) and random `crop_px / 8` latent
sub-crops from the cache; the denoiser's position tables get a random `pos_offset` per batch so
that every row and column of them is trained although the crops are smaller than the largest
grid. With `diffusion.predict_residual` the diffused quantity is future - last context latent;
a motion-aware model (`diffusion.extrapolation`) trains on a window cache with the encoded
extrapolation nowcasts (`latent_cache.build_window_cache`), diffuses the residual from them,
divided by its per-lead std (`residual_scale`, measured on the cache when the run starts), and
sees them as conditioning (`models.residual`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.data import list_events, split_events
from models.earthformer_unet import EarthformerUNet
from models.metadata import DENOISER_FILE, read_model_metadata
from models.residual import ResidualMap
from models.schedulers import NoiseSchedule
from models.training.common import (
    EMA,
    CSVLog,
    Deadline,
    Every,
    apply_overrides,
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
from models.training.latent_cache import (
    LatentCache,
    WindowBatch,
    WindowSampler,
    build_latent_cache,
    build_window_cache,
)
from models.vae import FrameVAE

DEFAULTS = {"steps": 3000, "batch_size": 4, "crop_px": 256, "lr": 5e-4}
WARMUP_STEPS = 200
CACHE_NAME = "latents.pt"
VALIDATION_CACHE_NAME = "latents_validation.pt"
VALIDATION_BATCHES = 4
LOG_FIELDS = ["step", "time_s", "lr", "loss", "val_loss"]
# the sampler's latent clamp: the 0.1 % and 99.9 % quantiles of the training latents per
# channel. Measured on held-out cases: MAE -10 %, CRPS within 2 %, the heavy-rain tail kept
# (q99 12.4 vs 12.5 mm/h observed); 1 % quantiles cut it (8.6 mm/h)
LATENT_RANGE_TAIL = 0.001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", default="runs/vae", help="VAE run folder (checkpoint.pt)")
    parser.add_argument(
        "--cache-crops", type=int, default=5, help="crop sequences to encode per training event"
    )
    parser.add_argument(
        "--val-cache-crops", type=int, default=2, help="crop sequences per held-out event"
    )
    parser.add_argument(
        "--cache-crop-px", type=int, default=256, help="side of the encoded crops [px]"
    )
    parser.add_argument(
        "--cache-windows",
        type=int,
        default=0,
        help="build a window cache with extrapolation nowcasts instead of crop sequences: this "
        "many windows per event group (a motion-aware model needs one); 0 = crop sequences",
    )
    parser.add_argument(
        "--val-cache-windows", type=int, default=12, help="windows per held-out event group"
    )
    parser.add_argument("--ema-decay", type=float, default=None, help="default: the config's")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="warm-start from a model folder's EMA denoiser (approximate resume, e.g. from "
        "models/weights/small-v3; its step count continues)",
    )
    parser.add_argument(
        "--min-snr-gamma",
        type=float,
        default=5.0,
        help="Min-SNR loss weighting gamma (0 = plain eps-MSE); default %(default)s",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a field of the preset for this model, e.g. denoiser.base_units=96",
    )


def load_vae(vae_run: Path, config: ModelConfig, device: torch.device) -> FrameVAE:
    """The VAE of a finished (or interrupted) VAE run, in eval mode."""
    state = load_checkpoint(vae_run, device)
    vae = FrameVAE(config.vae).to(device)
    vae.load_state_dict(state["vae"])
    return vae.eval().requires_grad_(False)


def prepare_caches(
    args: argparse.Namespace, config: ModelConfig, device: torch.device, run_dir: Path
) -> tuple[LatentCache, LatentCache | None]:
    """Load `<run>/latents.pt` (+ validation), or encode them with the VAE run first."""
    path, val_path = run_dir / CACHE_NAME, run_dir / VALIDATION_CACHE_NAME
    if path.exists():
        train = LatentCache.load(path)
        return train, LatentCache.load(val_path) if val_path.exists() else None
    train_events, val_events = split_events(list_events(args.data), args.validation)
    vae = load_vae(Path(args.vae), config, device)
    # a separate generator: the cache is a function of the seed, not of the training state
    rng = np.random.default_rng([args.seed, 1])
    t0 = time.monotonic()
    if args.cache_windows:
        px = args.cache_crop_px
        train = build_window_cache(vae, train_events, config, px, args.cache_windows, rng)
        val = build_window_cache(vae, val_events, config, px, args.val_cache_windows, rng)
    elif config.diffusion.extrapolation:
        raise ValueError("a motion-aware model (diffusion.extrapolation) needs --cache-windows N")
    else:
        crops, val_crops = args.cache_crops, args.val_cache_crops
        train = build_latent_cache(vae, train_events, config, args.cache_crop_px, crops, rng)
        val = build_latent_cache(vae, val_events, config, args.cache_crop_px, val_crops, rng)
    print(
        f"ldm: encoded {len(train.latents)} training and {len(val.latents)} validation "
        f"sequences in {time.monotonic() - t0:.0f} s"
    )
    train.save(path)
    if val.latents:
        val.save(val_path)
    return train, val if val.latents else None


def diffusion_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    batch: WindowBatch,
    config: ModelConfig,
    generator: torch.Generator,
    pos_offset: tuple[int, int] = (0, 0),
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """eps-MSE of one batch, optionally Min-SNR weighted.

    batch: unscaled latents `(B, T_in + T_out, C, h, w)` (context first) and, for a
        motion-aware model, the extrapolation latents `(B, T_out, C, h, w)`; both are scaled
        by `config.latent_scale` here. What is diffused follows `models.residual.ResidualMap`.
    min_snr_gamma: weight each sample's eps-MSE by min(SNR_t, gamma) / SNR_t, SNR_t =
        alpha_prod_t / (1 - alpha_prod_t) (Hang et al. 2023, "Min-SNR weighting"). It damps
        the large, mostly irreducible loss of the nearly clean steps, which otherwise dominates
        the gradient, in favour of the noisy steps where the context decides the forecast.
        None = plain eps-MSE (used for the validation loss).
    """
    device = next(denoiser.parameters()).device
    latents = batch.latents.to(device) * config.latent_scale
    context, future = latents[:, : config.frames_in], latents[:, config.frames_in :]
    extrapolation = None
    if config.diffusion.extrapolation:
        if batch.extrapolation is None:
            raise ValueError("a motion-aware model trains on a cache with extrapolations")
        extrapolation = batch.extrapolation.to(device) * config.latent_scale
    residual = ResidualMap.for_config(config.diffusion, context, extrapolation)
    future = residual.to_diffused(future)
    size = latents.shape[0]
    timesteps = torch.randint(
        0, schedule.num_train_steps, (size,), generator=generator, device=device
    )
    noise = torch.randn(future.shape, generator=generator, device=device)
    noisy = schedule.add_noise(future, noise, timesteps)
    prediction = denoiser(
        noisy, timesteps, context, pos_offset=pos_offset, extrapolation=extrapolation
    )
    if min_snr_gamma is None:
        return F.mse_loss(prediction, noise)
    per_sample = ((prediction - noise) ** 2).flatten(1).mean(dim=1)
    alpha_prod = schedule.alphas_cumprod[timesteps.cpu()].to(device=device, dtype=torch.float32)
    snr = alpha_prod / (1.0 - alpha_prod)
    weights = torch.clamp(snr, max=min_snr_gamma) / snr
    return (weights * per_sample).mean()


def residual_scale(cache: LatentCache, config: ModelConfig) -> tuple[float, ...]:
    """Per-lead std of the scaled residual (future - extrapolation latents) over the cache."""
    if not cache.extrapolations:
        raise ValueError("the cache has no extrapolations to measure the residual scale on")
    # windows of different sizes (small grids give smaller crops): flatten each lead
    residuals = torch.cat(
        [
            ((z[config.frames_in :] - e) * config.latent_scale).flatten(1)
            for z, e in zip(cache.latents, cache.extrapolations, strict=True)
        ],
        dim=1,
    )
    return tuple(residuals.std(dim=1).tolist())


def validation_loss(
    denoiser: torch.nn.Module,
    schedule: NoiseSchedule,
    cache: LatentCache,
    config: ModelConfig,
    latent_px: int,
    batch_size: int,
    seed: int,
) -> float:
    """Mean eps-MSE on held-out windows with fixed windows, timesteps and noise."""
    device = next(denoiser.parameters()).device
    sampler = WindowSampler(cache, config.frames_in, config.frames_out)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    with evaluating(denoiser):
        for _ in range(VALIDATION_BATCHES):
            batch = sampler.batch(batch_size, latent_px, rng)
            losses.append(diffusion_loss(denoiser, schedule, batch, config, generator).item())
    return float(np.mean(losses))


def warm_start(denoiser: EarthformerUNet, path: Path, device: torch.device) -> None:
    """Load a model folder's denoiser weights into `denoiser`, adapting what a motion-aware or
    smaller-grid variant of the same architecture changes:

    - the patch embedding's extrapolation input channels start at zero (the network starts as
      the old one, and learns to use them);
    - position tables keep their first rows, relative-bias tables their central offsets.
    Any other difference raises.
    """
    old = load_file(str(path), device=str(device))
    state = denoiser.state_dict()
    channels = denoiser.latent_channels
    for name, target in state.items():
        source = old[name]
        if source.shape == target.shape:
            state[name] = source
        elif name == "patch_embed.proj.weight" and source.shape[1] == channels + 1:
            adapted = torch.zeros_like(target)
            adapted[:, :channels] = source[:, :channels]
            adapted[:, -1] = source[:, -1]  # the context marker stays the last channel
            state[name] = adapted
        elif name.startswith("pos_embed.") and source.shape[0] >= target.shape[0]:
            state[name] = source[: target.shape[0]]
        elif name.endswith("relative_bias") and source.shape[0] >= target.shape[0]:
            start = (source.shape[0] - target.shape[0]) // 2
            state[name] = source[start : start + target.shape[0]]
        else:
            raise ValueError(f"cannot warm-start {name}: {tuple(source.shape)} -> {target.shape}")
    denoiser.load_state_dict(state)


def train(args: argparse.Namespace) -> int:
    """Run (or resume) the LDM stage; writes `<out>/checkpoint.pt`, `<out>/log.csv`."""
    device = select_device(args.device, args.threads)
    run_dir = Path(args.out or "runs/ldm")
    state = load_checkpoint(run_dir, device) if args.resume else None
    warm = read_model_metadata(args.init_from) if args.init_from and state is None else None
    if warm is not None:
        # architecture and latent_scale of the shipped model; --set may change the rest (a
        # changed architecture fails to load its weights below)
        base_config = apply_overrides(warm.config, args.set)
    elif state is None:
        # the VAE run fixes the VAE part of the config (the preset may have changed since)
        vae_config = ModelConfig.from_dict(load_checkpoint(Path(args.vae))["config"]).vae
        base_config = stage_config(args.config, None).replace(vae=vae_config)
        base_config = apply_overrides(base_config, args.set)
    else:
        base_config = stage_config(args.config, state)
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    crop_px = args.crop_px or DEFAULTS["crop_px"]
    latent_px = crop_px // VAE_DOWNSAMPLE_FACTOR
    base_lr = args.lr or DEFAULTS["lr"]

    cache, val_cache = prepare_caches(args, base_config, device, run_dir)
    config = base_config
    if state is None and warm is None:
        config = base_config.replace(latent_scale=1.0 / cache.latent_std())
    if config.diffusion.extrapolation and config.diffusion.residual_scale is None:
        scale = residual_scale(cache, config)
        config = config.replace(diffusion=replace(config.diffusion, residual_scale=scale))
        print("ldm: residual std per lead " + " ".join(f"{v:.3f}" for v in scale))
    if config.latent_min is None:  # also for runs and models from before the range existed
        low, high = cache.channel_range(LATENT_RANGE_TAIL)
        config = config.replace(
            latent_min=tuple(v * config.latent_scale for v in low),
            latent_max=tuple(v * config.latent_scale for v in high),
        )
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    denoiser = seeded_init(args.seed, lambda: EarthformerUNet(config)).to(device)
    ema = EMA(denoiser, args.ema_decay or config.diffusion.ema_decay)
    schedule = NoiseSchedule(config.diffusion)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=base_lr, weight_decay=0.0)

    start_step, elapsed_s = 0, 0.0
    if state is not None:
        denoiser.load_state_dict(state["denoiser"])
        ema.load_state_dict(state["ema"])
        if "optimiser" in state:  # slim checkpoints (shipped with the model) have none
            optimiser.load_state_dict(state["optimiser"])
        restore_rng(state["rng"], generator, rng)
        start_step, elapsed_s = state["step"], state["elapsed_s"]
    elif warm is not None:
        # approximate resume from a model folder: its EMA weights start both the weights and
        # the EMA; Adam's moments and the RNG streams start afresh
        warm_start(denoiser, Path(args.init_from) / DENOISER_FILE, device)
        ema = EMA(denoiser, args.ema_decay or config.diffusion.ema_decay)
        ema.updates = 1000  # past the warm-up: keep the averaged weights' inertia
        start_step = int(warm.training.get("ldm", {}).get("steps", 0))
        elapsed_s = float(warm.training.get("ldm", {}).get("wall_s", 0.0))

    sampler = WindowSampler(cache, config.frames_in, config.frames_out)
    max_row, max_col = denoiser.max_pos_offset(latent_px, latent_px)
    log = CSVLog(run_dir / "log.csv", LOG_FIELDS, start_step if args.resume else None)
    deadline, checkpoint_due = Deadline(args.max_minutes), Every(args.checkpoint_every_s)
    bar = progress_bar(steps, start_step, "ldm")
    t0 = time.monotonic() - elapsed_s
    ema_denoiser = seeded_init(args.seed, lambda: EarthformerUNet(config)).to(device)

    def checkpoint(step: int) -> float | None:
        val = None
        if val_cache is not None:
            ema.copy_to(ema_denoiser)
            val = validation_loss(
                ema_denoiser, schedule, val_cache, config, latent_px, batch_size, args.seed
            )
        save_checkpoint(
            run_dir,
            {
                "stage": "ldm",
                "step": step,
                "elapsed_s": time.monotonic() - t0,
                "config": config.to_dict(),
                "denoiser": denoiser.state_dict(),
                "ema": ema.state_dict(),
                "optimiser": optimiser.state_dict(),
                "rng": rng_state(generator, rng),
                "args": {k: v for k, v in vars(args).items() if k != "func"},
                "val_loss": val,
            },
        )
        return val

    step = start_step
    denoiser.train()
    stop = min(steps, args.until_step or steps)
    while step < stop:
        lr = cosine_lr(step, steps, base_lr, WARMUP_STEPS)
        set_lr(optimiser, lr)
        batch = sampler.batch(batch_size, latent_px, rng)
        pos_offset = (int(rng.integers(max_row + 1)), int(rng.integers(max_col + 1)))
        loss = diffusion_loss(
            denoiser,
            schedule,
            batch,
            config,
            generator,
            pos_offset,
            args.min_snr_gamma if args.min_snr_gamma > 0 else None,
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimiser.step()
        ema.update(denoiser)
        step += 1
        row = {"step": step, "time_s": round(time.monotonic() - t0, 1), "lr": lr}
        row["loss"] = loss.item()
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        bar.update(1)
        if step == stop or deadline.expired() or checkpoint_due():
            row["val_loss"] = checkpoint(step)
            log.write(row)
            if deadline.expired():
                break
        elif step % args.log_every == 0:
            log.write(row)
    bar.close()
    log.close()
    print(f"ldm: stopped at step {step}/{steps}, checkpoint in {run_dir}")
    return 0
