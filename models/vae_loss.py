"""Training losses of the frame-wise VAE: pixel + KL + adaptive-weight hinge GAN (no perceptual).

Generator (VAE) objective per batch of N frames:

    L = rec + kl_weight * KL + [step >= disc_start_step] * lambda * g
    rec    = mean over frames of the pixel error summed over (C, H, W)   (L1 or L2)
    KL     = mean over frames of KL(q(z|x) || N(0, I)) summed over (C, h, w)
    g      = -mean(D(reconstruction))                                    (hinge generator loss)
    lambda = disc_weight * ||d rec / d W_last|| / (||d g / d W_last|| + 1e-4), clamped to
             [0, 1e4] and detached; W_last = the decoder's output conv weight

Both rec and KL are sums per frame (as in the reference), which is the scale `kl_weight ~ 1e-6`
is meant for. Discriminator objective (hinge):

    L_D = (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec)))) / 2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.vae import DiagonalGaussian

PIXEL_LOSSES = ("l1", "l2")
ADAPTIVE_WEIGHT_EPS = 1e-4
ADAPTIVE_WEIGHT_MAX = 1e4


@dataclass(frozen=True)
class VAELossConfig:
    """Weights of the VAE training losses.

    pixel_loss: "l2" (squared error) or "l1" (absolute error) per pixel.
    kl_weight: weight of the per-frame KL against the per-frame summed pixel error.
    disc_weight: scale of the adaptive GAN weight.
    disc_start_step: optimiser step from which the adversarial term is on (warm-up before).
    """

    pixel_loss: str = "l2"
    kl_weight: float = 1e-6
    disc_weight: float = 0.5
    disc_start_step: int = 5000

    def __post_init__(self) -> None:
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {self.pixel_loss!r}")


def pixel_error(frames: torch.Tensor, reconstruction: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel error `(N, 1, H, W)`: squared ("l2") or absolute ("l1") difference."""
    if kind == "l2":
        return (reconstruction - frames) ** 2
    if kind == "l1":
        return torch.abs(reconstruction - frames)
    raise ValueError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {kind!r}")


def adaptive_gan_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer_weight: torch.Tensor
) -> torch.Tensor:
    """||grad_W rec|| / (||grad_W gan|| + 1e-4), clamped to [0, 1e4], detached (scalar).

    Balances the two terms at the decoder's last layer. Without autograd (e.g. validation under
    `torch.no_grad`) the ratio is undefined and 0 is returned.
    """
    if not (torch.is_grad_enabled() and rec_loss.requires_grad and gan_loss.requires_grad):
        return torch.zeros((), device=rec_loss.device)
    rec_grad = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(rec_grad) / (
        torch.linalg.vector_norm(gan_grad) + ADAPTIVE_WEIGHT_EPS
    )
    return torch.clamp(weight, 0.0, ADAPTIVE_WEIGHT_MAX).detach()


def vae_generator_loss(
    frames: torch.Tensor,
    reconstruction: torch.Tensor,
    posterior: DiagonalGaussian,
    discriminator: nn.Module,
    last_layer_weight: torch.Tensor,
    step: int,
    cfg: VAELossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The VAE's training loss for one batch.

    Parameters
    ----------
    frames (`(N, 1, H, W)` float): normalised rain rate, the targets.
    reconstruction (`(N, 1, H, W)` float): the VAE's output for `frames`.
    posterior: q(z | frames) from the same forward pass.
    discriminator: scores reconstructions (only called from `cfg.disc_start_step` on). Its
        parameters receive gradients too; step only the VAE's optimiser with this loss.
    last_layer_weight: `FrameVAE.last_layer_weight`.
    step: the current optimiser step (switches the adversarial term on).

    Returns
    -------
    (loss: scalar tensor, logs: floats "loss", "rec", "pixel_mean", "kl", "gan", "gan_weight")
    """
    error = pixel_error(frames, reconstruction, cfg.pixel_loss)
    rec_loss = error.sum(dim=(1, 2, 3)).mean()
    kl_loss = posterior.kl().mean()
    loss = rec_loss + cfg.kl_weight * kl_loss
    gan_loss = torch.zeros((), device=frames.device)
    gan_weight = torch.zeros((), device=frames.device)
    if step >= cfg.disc_start_step:
        gan_loss = -torch.mean(discriminator(reconstruction))
        gan_weight = cfg.disc_weight * adaptive_gan_weight(rec_loss, gan_loss, last_layer_weight)
        loss = loss + gan_weight * gan_loss
    logs = {
        "loss": loss.item(),
        "rec": rec_loss.item(),
        "pixel_mean": error.mean().item(),
        "kl": kl_loss.item(),
        "gan": gan_loss.item(),
        "gan_weight": gan_weight.item(),
    }
    return loss, logs


def discriminator_loss(
    discriminator: nn.Module, frames: torch.Tensor, reconstruction: torch.Tensor
) -> torch.Tensor:
    """Hinge loss of the discriminator (scalar tensor); `reconstruction` is detached here.

    frames, reconstruction (`(N, 1, H, W)` float): real and reconstructed normalised rain rate.
    """
    logits_real = discriminator(frames)
    logits_fake = discriminator(reconstruction.detach())
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))
