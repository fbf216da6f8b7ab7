"""Model folders (save/load, metadata, checksums), ONNX export of the codec, model-info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models import export, info
from models.bundle import load_model_dir, save_model_dir
from models.config import PAPER, TINY
from models.metadata import (
    DEFAULT_MODEL_DIR,
    read_model_metadata,
    verify_checksums,
)
from models.onnx_codec import OnnxCodecSession, VAEDecoder, VAEEncoderMean
from models.pipeline import NowcastPipeline


def test_metadata_of_the_tiny_folder(tiny_model_dir: Path) -> None:
    metadata = read_model_metadata(tiny_model_dir)
    assert metadata.config == TINY
    assert metadata.frames_in == 7 and metadata.frames_out == 6
    assert metadata.grid_factor == 16 and metadata.max_grid_px == 256
    assert metadata.normalisation["rain_max_mm_h"] == TINY.rain_max_mm_h
    assert "torch" in metadata.library_versions and "onnxruntime" in metadata.library_versions
    expected = {
        "vae.safetensors",
        "denoiser.safetensors",
        "alignment.safetensors",
        "readout.safetensors",
        "encoder.onnx",
        "decoder.onnx",
    }
    assert set(metadata.checksums) == expected
    verify_checksums(tiny_model_dir)
    assert len(metadata.weights_checksum) == 64
    assert DEFAULT_MODEL_DIR.name == "small-v3"


def test_metadata_reader_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, models.metadata; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_save_load_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    bundle = load_model_dir(tiny_model_dir)
    saved = save_model_dir(
        tmp_path / "copy",
        bundle.config,
        bundle.vae,
        bundle.denoiser,
        bundle.alignment,
        extra={"version": "7", "training": {"steps": 3}, "data": "synthetic"},
    )
    assert saved.version == "7" and saved.training == {"steps": 3}
    assert saved.extra == {"data": "synthetic"}
    loaded = load_model_dir(tmp_path / "copy")
    for original, restored in [
        (bundle.vae, loaded.vae),
        (bundle.denoiser, loaded.denoiser),
        (bundle.alignment, loaded.alignment),
    ]:
        state, state_back = original.state_dict(), restored.state_dict()
        assert state.keys() == state_back.keys()
        assert all(torch.equal(state[key], state_back[key]) for key in state)
    assert not loaded.denoiser.training
    # same networks -> same files -> same checksums as the original folder
    original = read_model_metadata(tiny_model_dir).checksums
    assert loaded.metadata.checksums["denoiser.safetensors"] == original["denoiser.safetensors"]


def test_tampered_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "tampered"))
    data = bytearray((copy / "denoiser.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "denoiser.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="denoiser.safetensors"):
        load_model_dir(copy)
    (copy / "vae.safetensors").unlink()
    with pytest.raises(ValueError, match="vae.safetensors is missing"):
        verify_checksums(copy)


def test_tampered_onnx_is_refused_by_the_pipeline_only(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "tampered_onnx"))
    (copy / "encoder.onnx").write_bytes((copy / "decoder.onnx").read_bytes())
    load_model_dir(copy)  # the torch networks are intact
    NowcastPipeline.from_model_dir(copy, encoder_backend="torch", decoder_backend="onnx")
    with pytest.raises(ValueError, match="encoder.onnx"):
        NowcastPipeline.from_model_dir(copy, encoder_backend="onnx")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.yaml"):
        read_model_metadata(tmp_path)


def test_onnx_files_have_the_contract_names_and_dynamic_axes(tiny_model_dir: Path) -> None:
    for name, input_name, output_name in [
        ("encoder.onnx", "frames", "latent_mean"),
        ("decoder.onnx", "latents", "frames"),
    ]:
        model = onnx.load(str(tiny_model_dir / name))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        (graph_input,) = model.graph.input
        assert graph_input.name == input_name
        assert model.graph.output[0].name == output_name
        dims = graph_input.type.tensor_type.shape.dim
        # batch, height and width symbolic; channels fixed
        assert [d.HasField("dim_param") for d in dims] == [True, False, True, True]


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch(tiny_model_dir: Path, batch: int) -> None:
    vae = load_model_dir(tiny_model_dir).vae
    encoder = OnnxCodecSession(tiny_model_dir / "encoder.onnx", ["CPUExecutionProvider"])
    decoder = OnnxCodecSession(tiny_model_dir / "decoder.onnx", ["CPUExecutionProvider"])
    assert encoder.provider == "CPUExecutionProvider"
    generator = torch.Generator().manual_seed(batch)
    # a grid other than the one traced at export, to exercise the dynamic axes
    frames = torch.rand(batch, 1, 48, 80, generator=generator)
    with torch.no_grad():
        latent_ref = VAEEncoderMean(vae)(frames)
        frames_ref = VAEDecoder(vae)(latent_ref)
    latent = encoder(frames)
    assert latent.shape == (batch, TINY.vae.latent_channels, 6, 10)
    reconstructed = decoder(latent_ref)
    assert reconstructed.shape == (batch, 1, 48, 80)
    for result, reference in [(latent, latent_ref), (reconstructed, frames_ref)]:
        error = (result - reference).abs().max().item()
        assert error <= 1e-4 * reference.abs().max().item()


def test_export_cli_rewrites_and_records_the_codec(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "export"))
    (copy / "encoder.onnx").unlink()
    (copy / "decoder.onnx").write_bytes(b"stale")
    assert export.main(["--weights", str(copy)]) == 0
    verify_checksums(copy)  # the new files' sha256 are in model.yaml
    errors = export.check_codec(load_model_dir(copy).vae, TINY, copy)
    assert set(errors) == {"encoder_batch1", "decoder_batch1", "encoder_batch3", "decoder_batch3"}
    assert max(errors.values()) <= export.RELATIVE_TOLERANCE
    assert export.main(["--weights", str(tmp_path / "nothing")]) == 1


def test_model_info_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--config", "paper"]) == 0
    document = json.loads(capsys.readouterr().out)
    counts = document["parameters"]
    # the reference implementation's sizes (issue 2), +-10%
    reference = {
        "vae_encoder": 34.7e6,
        "vae_decoder": 49.8e6,
        "discriminator": 2.76e6,
        "denoiser": 136.8e6,
        "alignment": 8.9e6,
    }
    for name, expected in reference.items():
        assert abs(counts[name] / expected - 1) <= 0.10, (name, counts[name])
    assert document["frames_in"] == PAPER.frames_in and document["frames_out"] == 6
    assert document["grid_factor"] == PAPER.grid_factor
    assert document["max_grid_px"] == PAPER.max_grid_px
    assert info.main(["--config", "tiny", "--grid", "128", "64"]) == 0
    tiny = json.loads(capsys.readouterr().out)
    assert tiny["latent_shape"] == [TINY.vae.latent_channels, 16, 8]
    assert info.main(["--config", "tiny", "--grid", "100", "64"]) == 0  # padded, not refused
    capsys.readouterr()
    assert info.main(["--config", "tiny", "--grid", "4096", "64"]) == 1  # above the largest side


def test_model_info_weights(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--weights", str(tiny_model_dir)]) == 0
    document = json.loads(capsys.readouterr().out)
    bundle = load_model_dir(tiny_model_dir)
    assert document["parameters"]["denoiser"] == sum(
        p.numel() for p in bundle.denoiser.parameters()
    )
    assert document["name"] == "tiny-random"
    assert np.isclose(document["pixel_size_m"], TINY.pixel_size_m)
