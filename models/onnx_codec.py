"""The VAE codec (frames <-> latents) in two interchangeable forms: torch modules, ONNX sessions.

Both forms are callables from a torch tensor to a torch tensor on the same device, so the
pipeline does not care which one it holds:

- encoder: frames `(N, 1, H, W)` normalised rain rate -> `latent_mean` `(N, C, H/8, W/8)`
  (the posterior mode; unscaled, the pipeline multiplies by `config.latent_scale`)
- decoder: latents `(N, C, h, w)` -> frames `(N, 1, 8h, 8w)` normalised rain rate

The ONNX files (`encoder.onnx`, `decoder.onnx`) are written by `models.export` from the same
torch modules (`VAEEncoderMean`, `VAEDecoder`), with dynamic N, H and W.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ENCODER_INPUT = "frames"
ENCODER_OUTPUT = "latent_mean"
DECODER_INPUT = "latents"
DECODER_OUTPUT = "frames"

# preference order; the first one onnxruntime offers is used, CPU always works
PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")


class VAEEncoderMean(nn.Module):
    """frames `(N, 1, H, W)` float32 (normalised rain rate, `models.units.normalise_rain`) ->
    posterior mean `(N, C, H/8, W/8)` float32 of a `FrameVAE` (unscaled latents)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames).mean


class VAEDecoder(nn.Module):
    """latents `(N, C, h, w)` float32 (unscaled) -> frames `(N, 1, 8h, 8w)` float32 of a
    `FrameVAE` (normalised rain rate, `models.units.denormalise_rain` gives mm h-1)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


def available_providers(preference: tuple[str, ...] = PROVIDER_PREFERENCE) -> list[str]:
    """The providers of `preference` that this onnxruntime build offers, in that order."""
    import onnxruntime as ort

    offered = set(ort.get_available_providers())
    return [p for p in preference if p in offered] or ["CPUExecutionProvider"]


class OnnxCodecSession:
    """An ONNX Runtime session for one half of the codec, called like the torch module.

    Parameters
    ----------
    path: `encoder.onnx` or `decoder.onnx`.
    providers: execution providers in preference order (default: CUDA, then CPU, of those
        available). `.provider` is the one the session actually uses.
    intra_op_threads: onnxruntime's intra-op thread count (None = its default).
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | tuple[str, ...] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no ONNX file {self.path}; run `nowcast export --weights {self.path.parent}`"
            )
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        requested = list(providers) if providers else available_providers()
        self.session = ort.InferenceSession(str(self.path), options, providers=requested)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        # onnxruntime silently falls back when a provider fails to initialise; report the truth
        self.provider = self.session.get_providers()[0]
        if requested and self.provider != requested[0]:
            log.warning(
                "%s: asked for %s, running on %s", self.path.name, requested[0], self.provider
            )

    def run_numpy(self, array: np.ndarray) -> np.ndarray:
        """The codec on a float32 array: encoder `(N, 1, H, W)` -> `(N, C, H/8, W/8)`, decoder
        `(N, C, h, w)` -> `(N, 1, 8h, 8w)`; N is the dynamic batch axis."""
        feed = {self.input_name: np.ascontiguousarray(array, dtype=np.float32)}
        return self.session.run([self.output_name], feed)[0]

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """Same contract as the torch module: the result is on `tensor`'s device and dtype."""
        output = self.run_numpy(tensor.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(output).to(device=tensor.device, dtype=tensor.dtype)

    def __repr__(self) -> str:
        return f"OnnxCodecSession({self.path.name!r}, provider={self.provider!r})"
