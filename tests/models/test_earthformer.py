"""Cuboid self-attention and the Earthformer-UNet denoiser: shapes, paper size, conditioning,
position offsets, one training step, ONNX export."""

from __future__ import annotations

import pytest
import torch

from models.config import PAPER, TINY, ModelConfig
from models.cuboid_attention import CuboidAttentionBlock, LineSelfAttention
from models.earthformer_unet import EarthformerUNet
from models.schedulers import NoiseSchedule
from tests.models.helpers import losses_around_one_adam_step, random_latents

REFERENCE_UNET_PARAMS = 136.8e6  # reference implementation, paper config


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _build(config: ModelConfig = TINY, seed: int = 0) -> EarthformerUNet:
    """A denoiser whose initial weights depend only on `seed` (global RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EarthformerUNet(config).eval()


@pytest.fixture
def unet() -> EarthformerUNet:
    return _build()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(2, 13, 8, 8), (1, 13, 4, 12), (3, 5, 6, 2)])
def test_cuboid_block_keeps_shape(shape: tuple[int, ...], generator: torch.Generator) -> None:
    block = CuboidAttentionBlock(16, num_heads=2, max_shape=(13, 12, 12))
    x = torch.randn(*shape, 16, generator=generator)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_line_attention_stays_inside_its_line(generator: torch.Generator) -> None:
    """A cuboid is one line: changing one line's tokens leaves every other line's output alone."""
    attention = LineSelfAttention(16, num_heads=4, max_len=10)
    lines = torch.randn(6, 10, 16, generator=generator)
    changed = lines.clone()
    changed[2] += torch.randn(10, 16, generator=generator)
    before, after = attention(lines), attention(changed)
    others = [0, 1, 3, 4, 5]
    torch.testing.assert_close(after[others], before[others])
    assert not torch.allclose(after[2], before[2])


def test_line_attention_position_bias_breaks_permutation_symmetry(
    generator: torch.Generator,
) -> None:
    """Without the bias, attention is permutation-equivariant along the line; the bias is what
    makes it position-aware."""
    attention = LineSelfAttention(8, num_heads=2, max_len=5)
    values = torch.randn(3, 5, 8, generator=generator)
    order = torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        attention.relative_bias.zero_()
        torch.testing.assert_close(attention(values[:, order]), attention(values)[:, order])
        attention.relative_bias.copy_(torch.randn(9, 2, generator=generator))
        assert not torch.allclose(attention(values[:, order]), attention(values)[:, order])


def test_line_attention_rejects_too_long_axis(generator: torch.Generator) -> None:
    attention = LineSelfAttention(8, num_heads=2, max_len=4)
    with pytest.raises(ValueError, match="at most 4"):
        attention(torch.randn(1, 5, 8, generator=generator))


@pytest.mark.parametrize("height, width", [(8, 8), (8, 16), (12, 4)])
def test_unet_output_shape(
    unet: EarthformerUNet, generator: torch.Generator, height: int, width: int
) -> None:
    """(1, 7, 1, 64, 64) frames -> latent 8x8; also non-square grids."""
    sample = random_latents(generator, 1, TINY.frames_out, height, width)
    context = random_latents(generator, 1, TINY.frames_in, height, width)
    eps = unet(sample, torch.tensor([999]), context)
    assert eps.shape == sample.shape
    assert torch.isfinite(eps).all()


def test_unet_accepts_float_and_scalar_timesteps(
    unet: EarthformerUNet, generator: torch.Generator
) -> None:
    sample = random_latents(generator, 2, TINY.frames_out)
    context = random_latents(generator, 2, TINY.frames_in)
    as_int = unet(sample, torch.tensor([10, 10]), context)
    as_float = unet(sample, torch.tensor([10.0, 10.0]), context)
    as_scalar = unet(sample, torch.tensor(10), context)
    torch.testing.assert_close(as_float, as_int)
    torch.testing.assert_close(as_scalar, as_int)


def test_unet_rejects_bad_grids_and_frames(
    unet: EarthformerUNet, generator: torch.Generator
) -> None:
    context = random_latents(generator, 1, TINY.frames_in)
    with pytest.raises(ValueError, match="multiple of 2"):
        unet(
            random_latents(generator, 1, TINY.frames_out, 8, 7), torch.tensor([1]), context[..., :7]
        )
    with pytest.raises(ValueError, match="future frames"):
        unet(random_latents(generator, 1, TINY.frames_out + 1), torch.tensor([1]), context)
    too_big = TINY.max_latent_px + 2
    with pytest.raises(ValueError, match="position tables"):
        unet(
            random_latents(generator, 1, TINY.frames_out, too_big, 8),
            torch.tensor([1]),
            random_latents(generator, 1, TINY.frames_in, too_big, 8),
        )


def test_unet_depends_on_context(unet: EarthformerUNet, generator: torch.Generator) -> None:
    sample = random_latents(generator, 1, TINY.frames_out)
    context = random_latents(generator, 1, TINY.frames_in)
    base = unet(sample, torch.tensor([500]), context)
    other_context = unet(sample, torch.tensor([500]), context + 1.0)
    assert (other_context - base).abs().max() > 1e-3
    # batch rows stay independent: changing row 1's context leaves row 0 alone
    pair_sample = torch.cat([sample, sample])
    steps = torch.tensor([500, 500])
    same = unet(pair_sample, steps, torch.cat([context, context]))
    mixed = unet(pair_sample, steps, torch.cat([context, context + 1.0]))
    torch.testing.assert_close(mixed[0], same[0])
    assert (mixed[1] - same[1]).abs().max() > 1e-3


def test_unet_pos_offset(unet: EarthformerUNet, generator: torch.Generator) -> None:
    sample = random_latents(generator, 1, TINY.frames_out)
    context = random_latents(generator, 1, TINY.frames_in)
    max_row, max_col = unet.max_pos_offset(8, 8)
    assert (max_row, max_col) == (TINY.max_latent_px - 8, TINY.max_latent_px - 8)
    base = unet(sample, torch.tensor([100]), context)
    shifted = unet(sample, torch.tensor([100]), context, pos_offset=(3, max_col))
    assert (shifted - base).abs().max() > 1e-4
    torch.testing.assert_close(unet(sample, torch.tensor([100]), context, pos_offset=(0, 0)), base)
    with pytest.raises(ValueError, match="position tables"):
        unet(sample, torch.tensor([100]), context, pos_offset=(max_row + 1, 0))


def test_paper_unet_size() -> None:
    """Within 10 % of the reference's 136.8 M (ours: patch-embedding first projection)."""
    with torch.device("meta"):
        unet = EarthformerUNet(PAPER)
    params = _count(unet)
    assert abs(params - REFERENCE_UNET_PARAMS) <= 0.10 * REFERENCE_UNET_PARAMS, params


def test_paper_unet_runs_on_meta() -> None:
    """Shapes of the paper model (7 -> 6 frames, 16x16x64 latents) without allocating weights."""
    with torch.device("meta"):
        unet = EarthformerUNet(PAPER)
        sample = torch.zeros(2, 6, 64, 16, 16)
        eps = unet(sample, torch.zeros(2), torch.zeros(2, 7, 64, 16, 16))
    assert eps.shape == (2, 6, 64, 16, 16)


def test_one_adam_step_lowers_eps_mse(unet: EarthformerUNet, generator: torch.Generator) -> None:
    unet.train()
    schedule = NoiseSchedule(TINY.diffusion)
    clean = random_latents(generator, 4, TINY.frames_out)
    context = random_latents(generator, 4, TINY.frames_in)
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.tensor([50, 300, 600, 900])
    noisy = schedule.add_noise(clean, noise, timesteps)

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(unet(noisy, timesteps, context), noise)

    before, after = losses_around_one_adam_step(loss, unet.parameters(), lr=1e-4)
    with torch.no_grad():
        # the residual blocks start as the identity (zero last conv); after a step the timestep
        # embedding reaches the output
        other_steps = unet(noisy, timesteps.flip(0), context)
        trained = unet(noisy, timesteps, context)
    assert after < before - 1e-4, (before, after)
    assert (other_steps - trained).abs().max() > 1e-5


def test_onnx_export_matches_pytorch(
    unet: EarthformerUNet, generator: torch.Generator, tmp_path
) -> None:
    """Exports with a dynamic batch axis; onnxruntime agrees within 1e-4 of the largest value."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "unet.onnx"
    torch.onnx.export(
        unet,
        (
            random_latents(generator, 2, TINY.frames_out, 8, 16),
            torch.tensor([3, 700]),
            random_latents(generator, 2, TINY.frames_in, 8, 16),
        ),
        str(path),
        input_names=["sample", "timestep", "context"],
        output_names=["eps"],
        dynamic_shapes={"sample": {0: batch}, "timestep": {0: batch}, "context": {0: batch}},
        opset_version=18,
        dynamo=True,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (1, 3):
        sample = random_latents(generator, rows, TINY.frames_out, 8, 16)
        context = random_latents(generator, rows, TINY.frames_in, 8, 16)
        timestep = torch.randint(0, 1000, (rows,), generator=generator)
        inputs = {
            "sample": sample.numpy(),
            "timestep": timestep.numpy(),
            "context": context.numpy(),
        }
        (onnx_eps,) = session.run(None, inputs)
        with torch.no_grad():
            reference = unet(sample, timestep, context)
        error = (torch.from_numpy(onnx_eps) - reference).abs().max()
        assert error <= 1e-4 * reference.abs().max(), (rows, error)
