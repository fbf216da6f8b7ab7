"""Frame-wise VAE, PatchGAN discriminator and VAE losses: shapes, sizes, KL, one-step training."""

from __future__ import annotations

import pytest
import torch

from models.config import PAPER, SMALL, TINY, VAE_DOWNSAMPLE_FACTOR, VAEConfig
from models.discriminator import PatchDiscriminator
from models.vae import DiagonalGaussian, FrameVAE, decode_latents, encode_frames
from models.vae_loss import (
    VAELossConfig,
    adaptive_gan_weight,
    discriminator_loss,
    vae_generator_loss,
)
from tests.models.helpers import losses_around_one_adam_step

PRESETS = {"tiny": TINY.vae, "small": SMALL.vae}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(cfg: VAEConfig, seed: int = 0) -> tuple[FrameVAE, PatchDiscriminator]:
    # module init draws from the global RNG; fork it so the test leaves it untouched
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FrameVAE(cfg), PatchDiscriminator(cfg)


def _frames(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth rain-like fields in [0, 1): `(n, 1, size, size)`."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 1, size // 8, size // 8), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes(name: str) -> None:
    cfg = PRESETS[name]
    vae, disc = _build(cfg)
    frames = _frames(3, 64, seed=1)
    h = 64 // VAE_DOWNSAMPLE_FACTOR
    moments = vae.encoder(frames)
    assert moments.shape == (3, 2 * cfg.latent_channels, h, h)
    latents = torch.randn(3, cfg.latent_channels, h, h, generator=torch.Generator().manual_seed(2))
    assert vae.decoder(latents).shape == (3, 1, 64, 64)
    reconstruction, posterior = vae(frames, generator=torch.Generator().manual_seed(3))
    assert reconstruction.shape == frames.shape
    assert posterior.mean.shape == (3, cfg.latent_channels, h, h)
    assert posterior.kl().shape == (3,)
    # PatchGAN: disc_layers stride-2 convs, then two stride-1 k4/p1 convs (-1 px each)
    side = 64 // 2**cfg.disc_layers - 2
    assert disc(frames).shape == (3, 1, side, side)


def test_non_square_grid() -> None:
    vae, _ = _build(TINY.vae)
    frames = _frames(2, 64, seed=4)[..., :48]
    reconstruction, posterior = vae(frames, sample_posterior=False)
    assert posterior.mean.shape[-2:] == (8, 6)
    assert reconstruction.shape == (2, 1, 64, 48)


def test_sequence_helpers() -> None:
    vae, _ = _build(TINY.vae)
    vae.eval()
    frames = _frames(7, 64, seed=5).reshape(1, 7, 1, 64, 64)
    with torch.no_grad():
        latents = encode_frames(vae, frames)
        assert latents.shape == (1, 7, TINY.vae.latent_channels, 8, 8)
        # frame-wise: frame 3 of the sequence encodes like frame 3 alone (posterior mode)
        torch.testing.assert_close(latents[0, 3], vae.encode(frames[0, 3:4]).mode()[0])
        decoded = decode_latents(vae, latents)
        assert decoded.shape == (1, 7, 1, 64, 64)
        torch.testing.assert_close(decode_latents(vae, latents, chunk_size=3), decoded)
        torch.testing.assert_close(encode_frames(vae, frames, chunk_size=2), latents)


def test_paper_parameter_counts() -> None:
    # reference implementation: encoder 34.7 M, decoder 49.8 M, discriminator 2.76 M
    vae = FrameVAE(PAPER.vae)
    disc = PatchDiscriminator(PAPER.vae)
    for counted, reference in (
        (_count(vae.encoder), 34.7e6),
        (_count(vae.decoder), 49.8e6),
        (_count(disc), 2.76e6),
    ):
        assert abs(counted - reference) <= 0.1 * reference, (counted, reference)


def test_kl_of_standard_normal_is_zero() -> None:
    moments = torch.zeros(2, 8, 4, 5)  # mean 0, logvar 0
    assert torch.allclose(DiagonalGaussian(moments).kl(), torch.zeros(2))
    # mean 1, var 1: KL = 0.5 * sum(mean^2) = 0.5 * C * h * w
    shifted = torch.cat([torch.ones(2, 4, 4, 5), torch.zeros(2, 4, 4, 5)], dim=1)
    assert torch.allclose(DiagonalGaussian(shifted).kl(), torch.full((2,), 0.5 * 4 * 4 * 5))


def test_posterior_sampling_and_clamp() -> None:
    moments = torch.cat([torch.zeros(1, 4, 8, 8), torch.full((1, 4, 8, 8), 100.0)], dim=1)
    posterior = DiagonalGaussian(moments)
    assert float(posterior.logvar.max()) == 20.0
    standard = DiagonalGaussian(torch.zeros(1, 8, 8, 8))
    first = standard.sample(torch.Generator().manual_seed(7))
    again = standard.sample(torch.Generator().manual_seed(7))
    other = standard.sample(torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(standard.mode(), torch.zeros(1, 4, 8, 8))


def test_adaptive_weight_is_gradient_norm_ratio() -> None:
    vae, disc = _build(TINY.vae)
    frames = _frames(2, 32, seed=9)
    reconstruction, _ = vae(frames, sample_posterior=False)
    rec = ((reconstruction - frames) ** 2).sum()
    gan = -disc(reconstruction).mean()
    weight = vae.last_layer_weight
    expected = torch.linalg.vector_norm(torch.autograd.grad(rec, weight, retain_graph=True)[0])
    expected = expected / (
        torch.linalg.vector_norm(torch.autograd.grad(gan, weight, retain_graph=True)[0]) + 1e-4
    )
    got = adaptive_gan_weight(rec, gan, weight)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected)


def test_discriminator_off_during_warm_up_and_without_autograd() -> None:
    vae, disc = _build(TINY.vae)
    frames = _frames(2, 32, seed=10)
    cfg = VAELossConfig(disc_start_step=100)
    reconstruction, posterior = vae(frames, generator=torch.Generator().manual_seed(0))
    _, logs = vae_generator_loss(
        frames, reconstruction, posterior, disc, vae.last_layer_weight, 99, cfg
    )
    assert logs["gan"] == 0.0 and logs["gan_weight"] == 0.0
    assert logs["loss"] == pytest.approx(logs["rec"] + cfg.kl_weight * logs["kl"], rel=1e-6)
    with torch.no_grad():  # validation: the loss is defined, the GAN weight is 0
        reconstruction, posterior = vae(frames, sample_posterior=False)
        _, logs = vae_generator_loss(
            frames, reconstruction, posterior, disc, vae.last_layer_weight, 100, cfg
        )
    assert logs["gan_weight"] == 0.0 and logs["gan"] != 0.0


@pytest.mark.parametrize("pixel_loss", ["l2", "l1"])
def test_one_step_lowers_generator_loss(pixel_loss: str) -> None:
    vae, disc = _build(TINY.vae, seed=11)
    frames = _frames(4, 32, seed=12)
    cfg = VAELossConfig(pixel_loss=pixel_loss, disc_start_step=0)
    gan_weights = []

    def loss_on_batch() -> torch.Tensor:
        # same posterior draw before and after the step
        reconstruction, posterior = vae(frames, generator=torch.Generator().manual_seed(13))
        loss, logs = vae_generator_loss(
            frames, reconstruction, posterior, disc, vae.last_layer_weight, 0, cfg
        )
        gan_weights.append(logs["gan_weight"])
        return loss

    before, after = losses_around_one_adam_step(loss_on_batch, vae.parameters(), lr=1e-3)
    assert gan_weights[0] > 0.0  # the adversarial term is part of the objective
    assert after < before


def test_one_step_lowers_discriminator_loss() -> None:
    vae, disc = _build(TINY.vae, seed=14)
    frames = _frames(4, 32, seed=15)
    with torch.no_grad():
        reconstruction, _ = vae(frames, sample_posterior=False)
    before, after = losses_around_one_adam_step(
        lambda: discriminator_loss(disc, frames, reconstruction), disc.parameters(), lr=1e-3
    )
    assert after < before


def test_loss_config_rejects_unknown_pixel_loss() -> None:
    with pytest.raises(ValueError, match="pixel_loss"):
        VAELossConfig(pixel_loss="l3")
