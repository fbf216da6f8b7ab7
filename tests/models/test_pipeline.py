"""The inference pipeline on a real tiny model folder (seeded random weights, ONNX codec)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import TINY
from models.pipeline import ForecastRequest, IntensityConstraint, NowcastPipeline
from tests.models.helpers import responsive, with_config

GRID = 64


def _past(seed: int = 0, frames: int = TINY.frames_in, grid: int = GRID) -> np.ndarray:
    """Rain-like input: a smooth blob of up to ~20 mm/h that moves, zeros elsewhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:grid, 0:grid].astype(np.float32)
    centre = rng.uniform(grid * 0.3, grid * 0.7, size=2)
    past = []
    for step in range(frames):
        distance2 = (y - centre[0]) ** 2 + (x - centre[1] - 2 * step) ** 2
        past.append(20.0 * np.exp(-distance2 / (2 * (grid / 8) ** 2)))
    rain = np.stack(past).astype(np.float32)
    rain[rain < 0.05] = 0.0
    return rain


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Path) -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(tiny_model_dir)


@pytest.fixture(scope="module")
def torch_pipeline(tiny_model_dir: Path) -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(
        tiny_model_dir,
        encoder_backend="torch",
        decoder_backend="torch",
        denoiser_precision="float32",
    )


def test_round_trip_shape_units_and_reproducibility(pipeline: NowcastPipeline) -> None:
    assert pipeline.encoder_backend == "onnx:CPUExecutionProvider"
    assert pipeline.decoder_backend == "onnx:CPUExecutionProvider"  # the default on a CPU
    past = _past()
    forecast = pipeline.forecast(past, members=3, steps=3, seed=11)
    assert forecast.shape == (3, TINY.frames_out, GRID, GRID)
    assert forecast.dtype == np.float32
    assert np.isfinite(forecast).all() and (forecast >= 0).all()
    # members differ from each other; the same seed gives the same bits
    assert not np.array_equal(forecast[0], forecast[1])
    again = pipeline.forecast(past, members=3, steps=3, seed=11)
    assert np.array_equal(forecast, again)
    other = pipeline.forecast(past, members=3, steps=3, seed=12)
    assert not np.allclose(forecast, other)


def test_uses_the_last_input_frames(pipeline: NowcastPipeline) -> None:
    past = _past(frames=TINY.frames_in + 2)
    long_input = past.copy()
    long_input[:2] = 50.0  # frames the model must ignore
    expected = pipeline.forecast(past[2:], members=1, steps=2, seed=3)
    assert np.array_equal(pipeline.forecast(long_input, members=1, steps=2, seed=3), expected)


def test_missing_coverage(pipeline: NowcastPipeline) -> None:
    past = _past()
    gaps = past.copy()
    gaps[-1, :10, :20] = np.nan  # no coverage in the last frame: masked in the output
    gaps[0, 40:, 40:] = np.nan  # an earlier gap only: the model sees 0 there, no mask
    forecast = pipeline.forecast(gaps, members=2, steps=2, seed=5)
    mask = np.isnan(forecast)
    assert mask[:, :, :10, :20].all()
    assert mask.sum() == 2 * TINY.frames_out * 10 * 20
    # the model reads NaN as no rain: elsewhere the forecast equals that of zeros in the gaps
    zeros = past.copy()
    zeros[-1, :10, :20] = 0.0
    zeros[0, 40:, 40:] = 0.0
    as_zero = pipeline.forecast(zeros, members=2, steps=2, seed=5)
    np.testing.assert_array_equal(forecast[~mask], as_zero[~mask])
    assert not np.isnan(as_zero).any()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((TINY.frames_in, 0, 64), "positive"),
        ((TINY.frames_in, 64, 2064), "exceeds"),
        ((TINY.frames_in - 1, 64, 64), "at least 7"),
        ((TINY.frames_in, 64), "time, y, x"),
    ],
)
def test_bad_input_is_a_clear_error(
    pipeline: NowcastPipeline, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pipeline.forecast(np.zeros(shape, np.float32), members=1, steps=1, seed=0)


def test_other_bad_requests(pipeline: NowcastPipeline) -> None:
    past = _past()
    with pytest.raises(ValueError, match="members"):
        pipeline.forecast(past, members=0)
    with pytest.raises(ValueError, match="steps"):
        pipeline.forecast(past, steps=0)
    infinite = past.copy()
    infinite[3, 5, 5] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        pipeline.forecast(infinite)
    with pytest.raises(ValueError):
        IntensityConstraint(target_mm_h=-1.0)


def test_on_step_reports_progress_and_can_cancel(pipeline: NowcastPipeline) -> None:
    calls: list[tuple[int, int]] = []
    pipeline.forecast(
        _past(), members=1, steps=4, seed=0, on_step=lambda s, n: calls.append((s, n))
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def cancel_at_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        pipeline.forecast(_past(), members=1, steps=4, seed=0, on_step=cancel_at_two)
    assert seen == [1, 2]


def test_steps_one_and_ddpm_like_eta(pipeline: NowcastPipeline) -> None:
    one = pipeline.forecast(_past(), members=2, steps=1, seed=1)
    noisy = pipeline.forecast(_past(), members=2, steps=3, seed=1, eta=1.0)
    assert np.isfinite(one).all() and np.isfinite(noisy).all()
    assert not np.allclose(noisy, pipeline.forecast(_past(), members=2, steps=3, seed=1))


def test_batch_equals_alone_bit_for_bit(pipeline: NowcastPipeline) -> None:
    """A request's forecast does not depend on its batch mates: constrained or not, same grid
    or not, it is bit for bit what it is alone (issue 13: up to 0.32 mm/h apart before)."""
    requests = [
        ForecastRequest(_past(1), members=2, steps=3, seed=21),
        ForecastRequest(_past(2), members=3, steps=3, seed=22, constraint=IntensityConstraint(5.0)),
        ForecastRequest(_past(3, grid=32), members=1, steps=3, seed=23),
        ForecastRequest(_past(4), members=1, steps=2, seed=24),
        ForecastRequest(_past(5), members=2, steps=3, seed=25, constraint=IntensityConstraint(1.0)),
    ]
    calls: list[tuple[int, int]] = []
    batched = pipeline.forecast_batch(requests, on_step=lambda s, n: calls.append((s, n)))
    total = 3 + 3 + 3 + 2 + 3
    assert calls[-1] == (total, total) and len(calls) == total
    for request, result in zip(requests, batched, strict=True):
        alone = pipeline.forecast_batch([request])[0]
        np.testing.assert_array_equal(result, alone)
    # in reverse order, next to other mates: still the same bits
    for result, again in zip(batched[::-1], pipeline.forecast_batch(requests[::-1]), strict=True):
        np.testing.assert_array_equal(result, again)


def test_shared_network_calls_agree_up_to_rounding(pipeline: NowcastPipeline) -> None:
    shared = with_config(pipeline, pipeline.config, share_network_calls=True)
    requests = [
        ForecastRequest(_past(1), members=2, steps=3, seed=21),
        ForecastRequest(_past(2), members=3, steps=3, seed=22),
    ]
    for together, alone in zip(
        shared.forecast_batch(requests), pipeline.forecast_batch(requests), strict=True
    ):
        np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)


def test_constraint(pipeline: NowcastPipeline) -> None:
    past = _past()
    plain = pipeline.forecast(past, members=2, steps=3, seed=4)
    off = pipeline.forecast(
        past, members=2, steps=3, seed=4, constraint=IntensityConstraint(8.0, strength=0.0)
    )
    assert np.array_equal(plain, off)  # strength 0 is exactly no guidance
    steered = pipeline.forecast(
        past, members=2, steps=3, seed=4, constraint=IntensityConstraint(8.0)
    )
    assert np.isfinite(steered).all() and not np.allclose(steered, plain)


def test_constraint_needs_an_alignment_network(pipeline: NowcastPipeline) -> None:
    bare = NowcastPipeline(
        pipeline.config, pipeline.encoder, pipeline.decoder, pipeline.denoiser, alignment=None
    )
    assert bare.forecast(_past(), members=1, steps=1, seed=0).shape[0] == 1
    with pytest.raises(ValueError, match="alignment"):
        bare.forecast(_past(), members=1, steps=1, seed=0, constraint=IntensityConstraint(2.0))


def _readout_model(pipeline: NowcastPipeline, **diffusion: object) -> NowcastPipeline:
    config = pipeline.config
    changes = {"guidance": "readout", "guidance_scale": 1.0, **diffusion}
    return with_config(pipeline, replace(config, diffusion=replace(config.diffusion, **changes)))


def _decoder_inputs(model: NowcastPipeline) -> list[torch.Tensor]:
    """Record the latents of every decoder call of `model` from now on."""
    calls: list[torch.Tensor] = []
    decoder = model.decoder

    def recording(latents: torch.Tensor) -> torch.Tensor:
        calls.append(latents)
        return decoder(latents)

    model.decoder = recording
    return calls


@pytest.mark.parametrize(
    "diffusion",
    [{}, {"predict_residual": True, "residual_shrink": (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)}],
    ids=["latents", "shrunk-residual"],
)
def test_readout_guidance_steers_the_decoded_latents_to_the_target(
    pipeline: NowcastPipeline, diffusion: dict[str, object]
) -> None:
    # with a residual shrink, what is decoded is the shrunk residual: the guidance steers that
    model = _readout_model(pipeline, **diffusion)
    model.readout = responsive(model.readout)
    past, scale = _past(), model.config.intensity_scale_mm_h
    calls = _decoder_inputs(model)

    def readout_mean_mm_h(forecast_latents: list[torch.Tensor]) -> float:
        return float(model.readout(torch.cat(forecast_latents)).mean()) * scale

    plain = model.forecast(past, members=2, steps=4, seed=4)
    plain_mean = readout_mean_mm_h(calls)
    calls.clear()
    target = 1.2 * plain_mean
    steered = model.forecast(
        past, members=2, steps=4, seed=4, constraint=IntensityConstraint(target)
    )
    # the tiny model has no rain mask: every block counts, and the readout of what is decoded
    # is on target
    assert readout_mean_mm_h(calls) == pytest.approx(target, rel=0.01)
    assert np.isfinite(steered).all() and not np.allclose(steered, plain)
    off = model.forecast(
        past, members=2, steps=4, seed=4, constraint=IntensityConstraint(target, strength=0.0)
    )
    assert np.array_equal(off, plain)


def test_readout_guidance_needs_a_readout(pipeline: NowcastPipeline) -> None:
    model = _readout_model(pipeline)
    model.readout = None
    with pytest.raises(ValueError, match="no intensity readout; drop the constraint"):
        model.forecast(_past(), members=1, steps=1, seed=0, constraint=IntensityConstraint(2.0))


def test_onnx_codec_matches_torch_codec(
    tiny_model_dir: Path, torch_pipeline: NowcastPipeline
) -> None:
    # a float32 denoiser: bfloat16 rounding would amplify the codecs' ~1e-6 differences
    candidates = [
        NowcastPipeline.from_model_dir(
            tiny_model_dir,
            encoder_backend="onnx",
            decoder_backend=decoder,
            denoiser_precision="float32",
        )
        for decoder in ("torch", "onnx")
    ]
    past = _past(7)
    reference = torch_pipeline.forecast(past, members=2, steps=3, seed=9)
    for candidate in candidates:
        result = candidate.forecast(past, members=2, steps=3, seed=9)
        np.testing.assert_allclose(result, reference, rtol=1e-3, atol=1e-3 * reference.max())


def test_residual_and_absolute_sampling_agree_when_the_clean_latent_is_pinned(
    pipeline: NowcastPipeline,
) -> None:
    """A residual model adds the last context latent back; with the latent range pinned to one
    value per channel both parameterisations must decode the same constant latent field."""
    channels = pipeline.config.vae.latent_channels
    pinned = tuple(0.3 * (c - 1) for c in range(channels))
    outputs = []
    for residual in (False, True):
        config = pipeline.config.replace(
            latent_min=pinned,
            latent_max=pinned,
            diffusion=replace(pipeline.config.diffusion, predict_residual=residual),
        )
        model = with_config(pipeline, config)
        outputs.append(model.forecast(_past(3), members=2, steps=3, seed=1))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    # and the pinned value is what gets decoded: every member and lead alike
    np.testing.assert_allclose(outputs[0], outputs[0][:1, :1].repeat(2, 0).repeat(6, 1), atol=1e-4)


def test_residual_model_runs_with_guidance(pipeline: NowcastPipeline) -> None:
    config = pipeline.config.replace(
        diffusion=replace(pipeline.config.diffusion, predict_residual=True)
    )
    model = with_config(pipeline, config)
    past = _past()
    plain = model.forecast(past, members=2, steps=3, seed=4)
    assert not np.allclose(plain, pipeline.forecast(past, members=2, steps=3, seed=4))
    steered = model.forecast(past, members=2, steps=3, seed=4, constraint=IntensityConstraint(8.0))
    assert np.isfinite(steered).all() and not np.allclose(steered, plain)


def test_bfloat16_denoiser_is_close_to_float32(pipeline: NowcastPipeline) -> None:
    parts = (pipeline.config, pipeline.encoder, pipeline.decoder, pipeline.denoiser)
    exact = NowcastPipeline(*parts, denoiser_precision="float32")
    fast = NowcastPipeline(*parts, denoiser_precision="bfloat16")
    assert (exact.denoiser_dtype, fast.denoiser_dtype) == (torch.float32, torch.bfloat16)
    past = _past(5)
    reference = exact.forecast(past, members=2, steps=3, seed=2)
    result = fast.forecast(past, members=2, steps=3, seed=2)
    assert not np.array_equal(result, reference)  # bfloat16 really ran
    np.testing.assert_allclose(result, reference, atol=0.02 * reference.max())
    with pytest.raises(ValueError, match="precision"):
        NowcastPipeline(*parts, denoiser_precision="float16")


def test_forecast_stays_inside_the_normalisation_range(tiny_model_dir):
    """A decoder overshoot must not become thousands of mm/h (expm1 of the linear output)."""
    pipeline = NowcastPipeline.from_model_dir(
        tiny_model_dir, encoder_backend="torch", decoder_backend="torch"
    )
    with torch.no_grad():
        # decoded ~3 in model space would be ~2e6 mm/h without the clamp
        pipeline.decoder.vae.decoder.conv_out.bias.fill_(3.0)
    past = np.full((7, 64, 64), 2.0, dtype=np.float32)
    forecast = pipeline.forecast(past, members=2, steps=1, seed=0)
    assert np.nanmax(forecast) <= pipeline.config.rain_max_mm_h * (1 + 1e-5)
    assert np.nanmin(forecast) >= 0.0


def _motion_aware(pipeline: NowcastPipeline, residual_scale: float) -> NowcastPipeline:
    """The tiny pipeline as a motion-aware model (seeded random denoiser with the extra input)."""
    from models.earthformer_unet import EarthformerUNet

    diffusion = replace(
        pipeline.config.diffusion,
        predict_residual=True,
        extrapolation=True,
        residual_scale=(residual_scale,) * pipeline.config.frames_out,
    )
    config = pipeline.config.replace(diffusion=diffusion)
    torch.manual_seed(0)
    return NowcastPipeline(config, pipeline.encoder, pipeline.decoder, EarthformerUNet(config))


def test_motion_aware_model_diffuses_around_the_extrapolation(torch_pipeline) -> None:
    """With a vanishing residual scale the forecast is the extrapolation nowcast through the VAE:
    the blob keeps moving 2 px per frame, which a persistence origin could not do."""
    from models.extrapolation import extrapolate
    from models.units import denormalise_rain, normalise_rain

    past = _past(2)
    model = _motion_aware(torch_pipeline, residual_scale=1e-6)
    forecast = model.forecast(past, members=2, steps=3, seed=0)
    nowcast = extrapolate(past, TINY.frames_out).rain_mm_h
    frames = torch.from_numpy(normalise_rain(nowcast, TINY.rain_max_mm_h))[:, None]
    with torch.no_grad():
        round_trip = torch_pipeline.decoder(torch_pipeline.encoder(frames)).clamp(0, 1)
    expected = denormalise_rain(round_trip, TINY.rain_max_mm_h)[:, 0].numpy()
    np.testing.assert_allclose(forecast[0], expected, rtol=5e-3, atol=1e-3 * expected.max())
    np.testing.assert_allclose(forecast[1], forecast[0], rtol=5e-3, atol=1e-3 * expected.max())
    # the nowcast moved the blob: its centre of mass at the last lead is ~2 px per frame east
    cols = np.arange(GRID)
    shift = (nowcast[-1].sum(0) @ cols) / nowcast[-1].sum() - (past[-1].sum(0) @ cols) / past[
        -1
    ].sum()
    assert shift == pytest.approx(2 * TINY.frames_out, abs=2.0)


def test_motion_aware_model_samples_and_steers(pipeline: NowcastPipeline) -> None:
    model = _motion_aware(pipeline, residual_scale=0.5)
    model.alignment = pipeline.alignment
    past = _past(4)
    plain = model.forecast(past, members=2, steps=3, seed=4)
    assert plain.shape == (2, TINY.frames_out, GRID, GRID) and np.isfinite(plain).all()
    assert not np.array_equal(plain[0], plain[1])
    steered = model.forecast(past, members=2, steps=3, seed=4, constraint=IntensityConstraint(8.0))
    assert np.isfinite(steered).all() and not np.allclose(steered, plain)


def test_precip_mask_keeps_only_rain_near_the_extrapolated_rain(
    pipeline: NowcastPipeline,
) -> None:
    """`precip_mask_rim_px`: the forecast is the unmasked one times the STEPS-style weight of
    the extrapolation nowcast, so a dry input stays exactly dry."""
    from models.extrapolation import extrapolate
    from models.precip_mask import rain_mask

    config = pipeline.config.replace(precip_mask_rim_px=3)
    masked = NowcastPipeline(config, pipeline.encoder, pipeline.decoder, pipeline.denoiser)
    dry = np.zeros((TINY.frames_in, GRID, GRID), dtype=np.float32)
    assert masked.forecast(dry, members=2, steps=2, seed=0).max() == 0.0
    past = _past(2)
    weight = rain_mask(extrapolate(past, TINY.frames_out).rain_mm_h, rim_px=3)
    plain = pipeline.forecast(past, members=2, steps=2, seed=0)
    forecast = masked.forecast(past, members=2, steps=2, seed=0)
    assert 0 < (weight == 0).mean() < 1 and not np.allclose(forecast, plain, equal_nan=True)
    np.testing.assert_allclose(forecast, plain * weight, rtol=1e-6)


def test_probability_matching_gives_members_the_extrapolations_intensities(
    pipeline: NowcastPipeline,
) -> None:
    """`probability_matching: cdf`: every member at every lead takes its values from the
    extrapolation nowcast (STEPS' cdf matching); a steered forecast keeps its steered mean, and
    `cdf_keep_mean` keeps every forecast's own mean."""
    from models.extrapolation import extrapolate

    config = pipeline.config.replace(probability_matching="cdf")
    matched = with_config(pipeline, config)
    past = _past(3)
    nowcast = extrapolate(past, TINY.frames_out).rain_mm_h
    plain = pipeline.forecast(past, members=2, steps=2, seed=0)
    forecast = matched.forecast(past, members=2, steps=2, seed=0)
    assert not np.allclose(forecast, plain)
    for member in forecast:
        for lead, field in enumerate(member):
            wet = np.sort(field[field > 0])[::-1]
            top = np.sort(np.nan_to_num(nowcast[lead]).ravel())[::-1][: wet.size]
            np.testing.assert_allclose(wet, top, rtol=1e-5)
    constraint = IntensityConstraint(8.0)
    steered = pipeline.forecast(past, members=2, steps=2, seed=0, constraint=constraint)
    steered_matched = matched.forecast(past, members=2, steps=2, seed=0, constraint=constraint)
    np.testing.assert_allclose(
        steered_matched.mean(axis=(2, 3)), steered.mean(axis=(2, 3)), rtol=1e-4
    )
    shape_only = NowcastPipeline(
        pipeline.config.replace(probability_matching="cdf_keep_mean"),
        pipeline.encoder,
        pipeline.decoder,
        pipeline.denoiser,
    )
    kept = shape_only.forecast(past, members=2, steps=2, seed=0)
    np.testing.assert_allclose(kept.mean(axis=(2, 3)), plain.mean(axis=(2, 3)), rtol=1e-4)
    assert not np.allclose(kept, plain)
    with pytest.raises(ValueError, match="probability_matching"):
        pipeline.config.replace(probability_matching="quantile")


def test_residual_shrink_pulls_unsteered_members_to_the_extrapolation(torch_pipeline) -> None:
    """`diffusion.residual_shrink` 0: an unconstrained forecast is the extrapolation's latents
    decoded, whatever the sampled residual; a steered forecast keeps its whole residual."""
    model = _motion_aware(torch_pipeline, residual_scale=0.5)
    frames_out = TINY.frames_out
    shrunk_config = model.config.replace(
        diffusion=replace(model.config.diffusion, residual_shrink=(0.0,) * frames_out)
    )
    model.alignment = torch_pipeline.alignment
    shrunk = with_config(model, shrunk_config)
    pinned = _motion_aware(torch_pipeline, residual_scale=1e-9)
    past = _past(2)
    np.testing.assert_allclose(
        shrunk.forecast(past, members=2, steps=3, seed=0),
        pinned.forecast(past, members=2, steps=3, seed=0),
        rtol=1e-3,
        atol=1e-4,
    )
    constraint = IntensityConstraint(8.0)
    np.testing.assert_array_equal(
        shrunk.forecast(past, members=2, steps=3, seed=0, constraint=constraint),
        model.forecast(past, members=2, steps=3, seed=0, constraint=constraint),
    )


def test_extrapolation_blend_replaces_the_first_leads_of_unsteered_forecasts(
    pipeline: NowcastPipeline,
) -> None:
    from models.extrapolation import extrapolate

    frames_out = TINY.frames_out
    weights = (1.0,) + (0.0,) * (frames_out - 1)
    blended = with_config(pipeline, pipeline.config.replace(extrapolation_blend=weights))
    past = _past(3)
    plain = pipeline.forecast(past, members=2, steps=2, seed=0)
    forecast = blended.forecast(past, members=2, steps=2, seed=0)
    nowcast = extrapolate(past, frames_out).rain_mm_h
    np.testing.assert_allclose(forecast[:, 0], np.stack([nowcast[0]] * 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(forecast[:, 1:], plain[:, 1:])
    constraint = IntensityConstraint(8.0)
    np.testing.assert_array_equal(
        blended.forecast(past, members=2, steps=2, seed=0, constraint=constraint),
        pipeline.forecast(past, members=2, steps=2, seed=0, constraint=constraint),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extrapolation_blend": (0.5,) * 3}, "one per lead"),
        ({"extrapolation_blend": (1.5,) + (0.0,) * (TINY.frames_out - 1)}, r"in \[0, 1\]"),
        (
            {"diffusion": replace(TINY.diffusion, residual_shrink=(0.5,) * TINY.frames_out)},
            "needs a residual model",
        ),
    ],
)
def test_per_lead_settings_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TINY.replace(**changes)
