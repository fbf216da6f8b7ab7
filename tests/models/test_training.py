"""Each training stage runs 2 steps on the tiny config, checkpoints, and resumes from it.

Runs on two small real event files (96 x 96 px, 16 frames) cut from the shared radar data.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import load_model_dir
from models.config import TINY
from models.data import DEFAULT_DATA_DIR
from models.metadata import verify_checksums
from models.training.cli import main
from models.training.common import EMA, apply_overrides, load_checkpoint
from models.training.latent_cache import LatentCache, WindowBatch, WindowSampler
from models.training.ldm import LATENT_RANGE_TAIL
from tests.models.test_data import MCH_EDGE, MCH_VALID, write_radar_subset

pytestmark = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason="shared radar data not present"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("radar")
    write_radar_subset(folder, *MCH_EDGE)
    write_radar_subset(folder, *MCH_VALID)
    return folder


def _common(data_dir: Path, out: Path, steps: int) -> list[str]:
    return [
        "--config", "tiny", "--data", str(data_dir), "--out", str(out),
        "--steps", str(steps), "--batch-size", "2", "--crop-px", "32",
        "--validation", MCH_VALID[0], "--threads", "1", "--log-every", "1",
    ]  # fmt: skip


def _logged_steps(run: Path) -> list[int]:
    with (run / "log.csv").open() as file:
        return [int(row["step"]) for row in csv.DictReader(file)]


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, Path]:
    """The three stages, each trained 2 steps and then resumed to step 3."""
    root = tmp_path_factory.mktemp("runs")
    runs = {stage: root / stage for stage in ("vae", "ldm", "alignment")}
    extra = {
        "vae": [],
        "ldm": [
            "--vae",
            str(runs["vae"]),
            "--cache-crops",
            "2",
            "--val-cache-crops",
            "1",
            "--cache-crop-px",
            "32",
        ],
        "alignment": ["--ldm", str(runs["ldm"])],
    }
    for stage, run in runs.items():
        assert main([stage, *_common(data_dir, run, 2), *extra[stage]]) == 0
        first = load_checkpoint(run)
        assert first["step"] == 2
        assert main([stage, *_common(data_dir, run, 3), *extra[stage], "--resume"]) == 0
    return runs


@pytest.mark.parametrize(
    ("stage", "weights_key"), [("vae", "vae"), ("ldm", "denoiser"), ("alignment", "alignment")]
)
def test_stage_checkpoints_and_resumes_with_the_step_counter(runs, stage, weights_key):
    state = load_checkpoint(runs[stage])
    assert state["stage"] == stage
    assert state["step"] == 3  # 2 steps, then resumed for one more
    assert _logged_steps(runs[stage]) == [1, 2, 3]
    assert {"torch", "numpy"} <= set(state["rng"])
    weights = state[weights_key]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    if stage != "vae":
        assert state["ema"]["updates"] == 3


def test_ldm_sets_the_latent_scale_from_the_cached_latents(runs):
    state = load_checkpoint(runs["ldm"])
    cache = LatentCache.load(runs["ldm"] / "latents.pt")
    scale = state["config"]["latent_scale"]
    assert scale == pytest.approx(1.0 / cache.latent_std(), rel=1e-5)
    assert scale != TINY.latent_scale
    flat = torch.cat([z.transpose(0, 1).flatten(1) for z in cache.latents], dim=1)
    low, high = cache.channel_range()
    np.testing.assert_allclose(low, flat.amin(dim=1).numpy(), rtol=1e-6)
    _, high = cache.channel_range(LATENT_RANGE_TAIL)
    assert all(h < m for h, m in zip(high, flat.amax(dim=1).tolist(), strict=True))
    np.testing.assert_allclose(state["config"]["latent_max"], np.array(high) * scale, rtol=1e-5)
    assert len(state["config"]["latent_min"]) == TINY.vae.latent_channels
    sampler = WindowSampler(cache, TINY.frames_in, TINY.frames_out)
    batch = sampler.batch(3, 4, np.random.default_rng(0))
    assert batch.latents.shape == (3, 13, TINY.vae.latent_channels, 4, 4)
    assert batch.future_mean_mm_h.shape == (3, TINY.frames_out)
    assert torch.isfinite(batch.latents).all()


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(data_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["vae", *_common(data_dir, straight, 3)]) == 0
    assert main(["vae", *_common(data_dir, resumed, 3), "--until-step", "2"]) == 0
    assert load_checkpoint(resumed)["step"] == 2
    assert main(["vae", *_common(data_dir, resumed, 3), "--resume"]) == 0
    a, b = load_checkpoint(straight)["vae"], load_checkpoint(resumed)["vae"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_decoder_only_run_starts_from_a_vae_run_and_keeps_its_encoder(runs, data_dir, tmp_path):
    tuned = tmp_path / "decoder"
    args = ["--init-from", str(runs["vae"]), "--decoder-only", "--disc-start-fraction", "0"]
    assert main(["vae", *_common(data_dir, tuned, 2), *args]) == 0
    before, after = load_checkpoint(runs["vae"])["vae"], load_checkpoint(tuned)["vae"]
    encoder = [name for name in before if name.startswith("encoder.")]
    decoder = [name for name in before if name.startswith("decoder.")]
    assert encoder and decoder
    # the latents an LDM was trained on do not change; the decoder (and only it) learns
    assert all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in decoder)
    assert _logged_steps(tuned)[-1] == 2  # a new schedule, not the init run's step count


def test_decoder_layers_gives_a_new_decoder_on_the_same_encoder(runs, data_dir, tmp_path):
    """`--decoder-layers`: another decoder depth; what fits is kept, the encoder whole."""
    resized = tmp_path / "resized"
    args = ["--init-from", str(runs["vae"]), "--decoder-only", "--disc-start-fraction", "1"]
    layers = TINY.vae.decoder_layers_per_block + 1
    argv = ["vae", *_common(data_dir, resized, 2), *args, "--decoder-layers", str(layers)]
    assert main(argv) == 0
    state = load_checkpoint(resized)
    assert state["config"]["vae"]["decoder_layers_per_block"] == layers
    before, after = load_checkpoint(runs["vae"])["vae"], state["vae"]
    encoder = [name for name in before if name.startswith("encoder.")]
    assert all(torch.equal(before[name], after[name]) for name in encoder)
    assert set(after) - set(before)  # the new resnets
    with pytest.raises(SystemExit, match="--decoder-layers needs --decoder-only"):
        main(["vae", *_common(data_dir, tmp_path / "bad", 1), "--decoder-layers", "1"])


def test_ema_tracks_the_average_of_the_weights():
    module = torch.nn.Linear(2, 1)
    ema = EMA(module, decay=0.5)
    start = module.weight.detach().clone()
    with torch.no_grad():
        module.weight.add_(1.0)
    ema.update(module)  # decay warm-up: min(0.5, 2/11) = 2/11
    expected = start * (2 / 11) + (start + 1.0) * (9 / 11)
    torch.testing.assert_close(ema.shadow["weight"], expected)


def test_package_writes_a_loadable_model_folder(runs, data_dir, tmp_path):
    weights = tmp_path / "model"
    argv = [
        "package", "--vae", str(runs["vae"]), "--ldm", str(runs["ldm"]),
        "--alignment", str(runs["alignment"]), "--weights", str(weights), "--checkpoints",
    ]  # fmt: skip
    assert main(argv) == 0
    bundle = load_model_dir(weights)
    assert bundle.alignment is not None
    ldm_state = load_checkpoint(runs["ldm"])
    assert bundle.config.latent_scale == pytest.approx(ldm_state["config"]["latent_scale"])
    for key, value in bundle.denoiser.state_dict().items():
        torch.testing.assert_close(value, ldm_state["ema"]["shadow"][key])
    assert (weights / "encoder.onnx").is_file() and (weights / "decoder.onnx").is_file()
    assert bundle.metadata.training["ldm"]["steps"] == 3
    # the shipped slim checkpoint resumes (fresh optimiser) and the step counter continues
    slim = weights / "checkpoints" / "alignment"
    assert "optimiser" not in load_checkpoint(slim)
    resume = ["alignment", "--config", "tiny", "--ldm", str(runs["ldm"]), "--out", str(slim)]
    assert main([*resume, "--steps", "4", "--batch-size", "2", "--crop-px", "32", "--resume"]) == 0
    assert load_checkpoint(slim)["step"] == 4
    # the LDM warm-starts from the folder's EMA denoiser and continues its step count
    warm = tmp_path / "warm"
    argv = ["ldm", "--config", "tiny", "--vae", str(runs["vae"]), "--out", str(warm)]
    argv += ["--init-from", str(weights), "--steps", "4", "--batch-size", "2", "--crop-px", "32"]
    argv += ["--data", str(data_dir), "--cache-crops", "1", "--cache-crop-px", "32"]
    argv += ["--validation", MCH_VALID[0]]
    assert main(argv) == 0
    state = load_checkpoint(warm)
    assert state["step"] == 4
    assert state["config"]["latent_scale"] == pytest.approx(bundle.config.latent_scale)


def test_window_sampler_balances_events_and_cuts_exact_sub_crop_means():
    long = torch.zeros(40, 4, 6, 6)
    short = torch.ones(14, 4, 6, 6)
    rain_long = torch.zeros(40, 6, 6)
    rain_short = torch.arange(14 * 36, dtype=torch.float32).reshape(14, 6, 6)
    cache = LatentCache([long, short], [rain_long, rain_short], ["long", "short"])
    sampler = WindowSampler(cache, frames_in=7, frames_out=6)
    batch = sampler.batch(400, 2, np.random.default_rng(0))
    from_short = (batch.latents[:, 0, 0, 0, 0] == 1).float().mean().item()
    assert 0.4 < from_short < 0.6  # 2 windows vs 28, yet each event half of the draws
    picked = batch.latents[:, 0, 0, 0, 0] == 1
    means = batch.future_mean_mm_h[picked]
    # every future mean is the mean of a 2x2 block window of some frame of `rain_short`
    candidates = {
        round(float(rain_short[t, r : r + 2, c : c + 2].mean()), 3)
        for t in range(14)
        for r in range(5)
        for c in range(5)
    }
    assert {round(float(v), 3) for v in means.flatten()} <= candidates


def test_config_overrides_change_only_the_named_fields():
    config = apply_overrides(TINY, ["denoiser.base_units=24", "denoiser.block_units=[24, 48]"])
    assert config.denoiser.base_units == 24
    assert config.denoiser.block_units == (24, 48)
    assert config.replace(denoiser=TINY.denoiser) == TINY
    with pytest.raises(SystemExit, match="no config field"):
        apply_overrides(TINY, ["denoiser.no_such_field=1"])


def test_residual_loss_diffuses_the_change_from_the_last_context_latent():
    from models.earthformer_unet import EarthformerUNet
    from models.schedulers import NoiseSchedule
    from models.training.ldm import diffusion_loss

    denoiser = EarthformerUNet(TINY).eval()
    schedule = NoiseSchedule(TINY.diffusion)
    latents = torch.randn(2, TINY.frames_in + TINY.frames_out, TINY.vae.latent_channels, 8, 8)
    changes = latents.clone()
    changes[:, TINY.frames_in :] -= latents[:, TINY.frames_in - 1 : TINY.frames_in]

    def loss(batch, residual):
        config = TINY.replace(diffusion=replace(TINY.diffusion, predict_residual=residual))
        means = torch.zeros(batch.shape[0], TINY.frames_out)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            return diffusion_loss(denoiser, schedule, WindowBatch(batch, means), config, generator)

    assert loss(latents, True) == pytest.approx(float(loss(changes, False)), rel=1e-6)
    assert loss(latents, True) != pytest.approx(float(loss(latents, False)), rel=1e-3)


def test_motion_aware_ldm_trains_on_a_window_cache_with_extrapolations(runs, data_dir, tmp_path):
    out = tmp_path / "ldm-motion"
    argv = [
        "ldm", *_common(data_dir, out, 2), "--vae", str(runs["vae"]), "--cache-windows", "3",
        "--val-cache-windows", "1", "--cache-crop-px", "48",
        "--set", "diffusion.extrapolation=true",
    ]  # fmt: skip
    assert main(argv) == 0
    state = load_checkpoint(out)
    config = state["config"]
    cache = LatentCache.load(out / "latents.pt")
    assert cache.extrapolations is not None
    assert len(cache.extrapolations) == len(cache.latents) == 3
    for latents, extrapolation in zip(cache.latents, cache.extrapolations, strict=True):
        assert latents.shape[0] == TINY.frames_in + TINY.frames_out
        assert extrapolation.shape == (TINY.frames_out, *latents.shape[1:])
        assert latents.shape[-1] == 48 // 8  # the whole window crop, sub-cropped per batch
    # the residual's std per lead, measured on the cache, makes it unit variance per lead
    scale = torch.tensor(config["diffusion"]["residual_scale"])
    residual = torch.stack(
        [
            (z[TINY.frames_in :] - e) * config["latent_scale"]
            for z, e in zip(cache.latents, cache.extrapolations, strict=True)
        ]
    )
    normalised = residual / scale.reshape(1, -1, 1, 1, 1)
    std = normalised.transpose(0, 1).flatten(1).std(dim=1)
    torch.testing.assert_close(std, torch.ones_like(std), rtol=1e-4, atol=1e-4)
    assert state["denoiser"]["patch_embed.proj.weight"].shape[1] == 2 * TINY.vae.latent_channels + 1
    sampler = WindowSampler(cache, TINY.frames_in, TINY.frames_out)
    batch = sampler.batch(2, 4, np.random.default_rng(0))
    assert batch.extrapolation is not None
    assert batch.extrapolation.shape == (2, TINY.frames_out, TINY.vae.latent_channels, 4, 4)


def test_readout_stage_adds_a_fitted_readout_to_a_model_folder(tiny_model_dir, data_dir, tmp_path):
    weights = tmp_path / "model"
    shutil.copytree(tiny_model_dir, weights)
    before = load_model_dir(weights)
    argv = [
        "readout", "--weights", str(weights), "--data", str(data_dir),
        "--validation", MCH_VALID[0], "--cases-per-event", "1", "--crop-px", "48",
        "--members", "1", "--rounds", "2", "--steps", "3", "--batch-size", "4",
        "--threads", "1", "--version", "9",
    ]  # fmt: skip
    assert main(argv) == 0
    bundle = load_model_dir(weights)  # checks every weight file's sha256
    verify_checksums(weights, bundle.metadata, ["encoder.onnx", "decoder.onnx"])
    assert bundle.config.diffusion.guidance == "readout"
    assert bundle.config.diffusion.guidance_scale == 1.0
    assert bundle.metadata.version == "9"
    summary = bundle.metadata.training["readout"]
    # round 2 adds the steered forecasts (3 targets x 1 member x the training frames)
    assert summary["rounds"] == 2 and summary["cases"] == 1
    first, second = summary["frames"]
    frames = TINY.frames_in + TINY.frames_out
    assert first == frames + TINY.frames_out and second == first + 3 * TINY.frames_out
    assert np.isfinite(summary["val_rel_error"])
    fitted = bundle.readout.state_dict()
    untouched = before.readout.state_dict()
    assert any(not torch.equal(fitted[key], untouched[key]) for key in fitted)
    # the other networks are those of the folder it started from
    for key, value in before.denoiser.state_dict().items():
        assert torch.equal(bundle.denoiser.state_dict()[key], value)
