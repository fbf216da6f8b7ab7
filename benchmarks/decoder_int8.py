"""int8 VAE decoder with ONNX Runtime against the float32 one: speed and reconstruction error.

One process, one thread count, the same real latents for every variant (issue 14, "the decoder
is the next lever"):

- latents: real radar frames (`../shared/data/radar`, mm h-1) cut to 256 x 256, normalised
  (`models.units`) and encoded by the model's `encoder.onnx` (the posterior mean, unscaled: what
  the pipeline hands `decoder.onnx` after dividing by `latent_scale`);
- calibration (static quantisation) on two events (KNMI 2010-08-26, BoM 2020-10-31),
  evaluation on another (MeteoSwiss 2015-05-15), so the int8 ranges are not fitted to the
  frames they are scored on;
- variants: `fp32` (the shipped `decoder.onnx`), `int8-dynamic` (`quantize_dynamic`: int8
  weights, activations quantised at run time), `int8-qdq` and `int8-qop` (`quantize_static`,
  per-channel int8 weights and uint8 activations from MinMax calibration, QDQ and QOperator
  formats, only the convolutions, the output convolution kept in float32 because `expm1` turns
  its error into mm h-1 at heavy rain);
- time: decode all evaluation frames in calls of `--chunk` frames (the pipeline's
  `codec_chunk`), `--repeats` times, variants interleaved so that background load hits them
  alike; the median per frame, and fp32 / variant as the speed-up;
- error against fp32, after the pipeline's clamp to [0, 1] and `denormalise_rain`: MAE and max
  |error| [mm h-1], MAE over wet pixels (fp32 >= 0.1 mm h-1), and CSI@1 mm h-1 of the variant's
  rain mask against fp32's.

    python benchmarks/decoder_int8.py [--threads 1] [--frames 64] [--repeats 5]
        [--calibration MinMax|Percentile|Entropy] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from models.metadata import DECODER_ONNX_FILE, DEFAULT_MODEL_DIR, ENCODER_ONNX_FILE  # noqa: E402
from models.onnx_codec import DECODER_INPUT, OnnxCodecSession  # noqa: E402
from models.pipeline import DEFAULT_CODEC_CHUNK  # noqa: E402
from models.units import denormalise_rain, normalise_rain  # noqa: E402

RADAR_DIR = REPO.parent / "shared" / "data" / "radar"
SIDE_PX = 256
# (event, first frame, top row, left column) of the 256 x 256 crops, all with rain; calibration
# includes heavy rain (BoM: 7 % of pixels >= 20 mm h-1, up to 92 mm h-1), which the evaluation
# event has (up to 116 mm h-1). Measured (MinMax, 1 thread): KNMI alone, MAE 0.066 and max 99
# mm h-1; with BoM, MAE 0.20 and max 68 mm h-1 (wider ranges, coarser steps for light rain).
CALIBRATION_CROPS = (("knmi_20100826", 20, 300, 250), ("bom_prcp-c10_66_20201031", 5, 256, 125))
EVALUATION_CROPS = (("mch_20150515", 0, 200, 300), ("mch_20150515", 8, 300, 150))
CALIBRATION_FRAMES = 32
CALIBRATION_BATCH = 8
WET_MM_H = 0.1
CSI_THRESHOLD_MM_H = 1.0


def radar_frames(event: str, first: int, row: int, col: int, count: int) -> np.ndarray:
    """`(count, 1, 256, 256)` float32 normalised rain rate of a crop of a shared radar event."""
    with xr.open_dataset(RADAR_DIR / f"{event}.nc") as source:
        rain = source["precip"].values[
            first : first + count, row : row + SIDE_PX, col : col + SIDE_PX
        ]
    if rain.shape[0] < count:
        raise ValueError(f"{event} has {rain.shape[0]} frames from {first}; need {count}")
    return normalise_rain(np.nan_to_num(rain, nan=0.0))[:, None].astype(np.float32)


def encode(encoder: OnnxCodecSession, crops: tuple, per_crop: int) -> np.ndarray:
    """Latent means `(N, C, 32, 32)` float32 of `per_crop` frames from each crop."""
    parts = [encoder.run_numpy(radar_frames(*crop, per_crop)) for crop in crops]
    return np.concatenate(parts)


def quantised_decoders(
    decoder_path: Path, calibration: np.ndarray, folder: Path, method: str = "MinMax"
) -> dict[str, Path]:
    """Write the int8 variants of `decoder_path` into `folder`; {name: path}. `method` names
    onnxruntime's `CalibrationMethod` of the static variants (MinMax, Percentile, Entropy)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = np.split(
                calibration, range(CALIBRATION_BATCH, len(calibration), CALIBRATION_BATCH)
            )
            self._batches = iter([{DECODER_INPUT: batch} for batch in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    graph = onnx.load(str(decoder_path)).graph
    output_conv = [node.name for node in graph.node if node.op_type == "Conv"][-1]
    paths = {"int8-dynamic": folder / "decoder_int8_dynamic.onnx"}
    quantize_dynamic(decoder_path, paths["int8-dynamic"], weight_type=QuantType.QInt8)
    for name, quant_format in (("int8-qdq", QuantFormat.QDQ), ("int8-qop", QuantFormat.QOperator)):
        paths[name] = folder / f"decoder_{name}.onnx"
        quantize_static(
            decoder_path,
            paths[name],
            Reader(),
            quant_format=quant_format,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=[output_conv],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[method],
        )
    return paths


def decode_mm_h(decoder: OnnxCodecSession, latents: np.ndarray, chunk: int) -> np.ndarray:
    """Rain rate `(N, H, W)` [mm h-1] the way the pipeline makes it: decode in chunks, clamp the
    normalised output to [0, 1], denormalise."""
    parts = [decoder.run_numpy(latents[i : i + chunk]) for i in range(0, len(latents), chunk)]
    return denormalise_rain(np.clip(np.concatenate(parts)[:, 0], 0.0, 1.0))


def errors_mm_h(result: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE, max |error|, wet-pixel MAE [mm h-1] and CSI@1 mm h-1 of `result` against fp32."""
    error = np.abs(result.astype(np.float64) - reference)
    wet = reference >= WET_MM_H
    rain, rain_ref = result >= CSI_THRESHOLD_MM_H, reference >= CSI_THRESHOLD_MM_H
    union = int(np.sum(rain | rain_ref))
    return {
        "mae_mm_h": float(error.mean()),
        "max_abs_mm_h": float(error.max()),
        "mae_wet_mm_h": float(error[wet].mean()) if wet.any() else 0.0,
        "csi1_vs_fp32": float(np.sum(rain & rain_ref)) / union if union else 1.0,
    }


def time_per_frame_ms(
    runs: dict[str, Callable[[], object]], frames: int, repeats: int
) -> dict[str, list[float]]:
    """Each run `repeats` times, interleaved; ms per frame of every run."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - started) / frames)
    return times


def cpu_flags() -> list[str]:
    """The CPU's int8 dot-product flags (VNNI) from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return sorted(flag for flag in flags if "vnni" in flag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_MODEL_DIR, help="model folder")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--frames", type=int, default=64, help="evaluation frames (256 x 256)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CODEC_CHUNK, help="frames per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed decodes per variant")
    parser.add_argument(
        "--calibration",
        default="MinMax",
        choices=("MinMax", "Percentile", "Entropy"),
        help="calibration method of the static int8 variants",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import onnxruntime

    cpu = ["CPUExecutionProvider"]
    encoder = OnnxCodecSession(args.weights / ENCODER_ONNX_FILE, cpu, args.threads)
    per_crop = -(-args.frames // len(EVALUATION_CROPS))
    latents = encode(encoder, EVALUATION_CROPS, per_crop)[: args.frames]
    calibration = encode(encoder, CALIBRATION_CROPS, CALIBRATION_FRAMES // len(CALIBRATION_CROPS))
    with tempfile.TemporaryDirectory(prefix="decoder-int8-") as folder:
        paths = {"fp32": args.weights / DECODER_ONNX_FILE}
        paths |= quantised_decoders(paths["fp32"], calibration, Path(folder), args.calibration)
        decoders = {name: OnnxCodecSession(path, cpu, args.threads) for name, path in paths.items()}
        sizes_kb = {name: path.stat().st_size / 1024 for name, path in paths.items()}
    outputs = {
        name: decode_mm_h(dec, latents, args.chunk) for name, dec in decoders.items()
    }  # warm-up
    runs = {
        name: (lambda dec=dec: decode_mm_h(dec, latents, args.chunk))
        for name, dec in decoders.items()
    }
    times = time_per_frame_ms(runs, len(latents), args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    summary = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_vnni_flags": cpu_flags(),
        "load_average": os.getloadavg(),
        "threads": args.threads,
        "frames": len(latents),
        "chunk": args.chunk,
        "repeats": args.repeats,
        "calibration": args.calibration,
        "calibration_crops": CALIBRATION_CROPS,
        "evaluation_crops": EVALUATION_CROPS,
        "fp32_rain_fraction_ge1": float(np.mean(outputs["fp32"] >= CSI_THRESHOLD_MM_H)),
        "variants": {
            name: {
                "ms_per_frame_median": medians[name],
                "ms_per_frame": times[name],
                "speedup_vs_fp32": medians["fp32"] / medians[name],
                "file_kb": sizes_kb[name],
                **errors_mm_h(outputs[name], outputs["fp32"]),
            }
            for name in decoders
        },
    }
    print(
        f"{len(latents)} frames of {SIDE_PX}^2 in chunks of {args.chunk}, "
        f"{args.threads} thread(s), {args.repeats} repeats, "
        f"onnxruntime {onnxruntime.__version__}, VNNI "
        f"{summary['cpu_vnni_flags'] or 'none'}, load {summary['load_average'][0]:.2f}"
    )
    print(
        f"{'variant':14s} {'ms/frame':>9s} {'speed-up':>9s} {'MAE':>8s} {'max':>8s} "
        f"{'MAE wet':>8s} {'CSI@1':>7s}"
    )
    for name, row in summary["variants"].items():
        print(
            f"{name:14s} {row['ms_per_frame_median']:9.1f} {row['speedup_vs_fp32']:9.2f} "
            f"{row['mae_mm_h']:8.4f} {row['max_abs_mm_h']:8.2f} {row['mae_wet_mm_h']:8.4f} "
            f"{row['csi1_vs_fp32']:7.4f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
