"""Every radar event in ../shared/data/radar/ as an agency would post it: the whole file.

For each file: read and validate it as the worker does (`read_radar_netcdf`: interval and pixel
size brought to the model's), forecast with the shipped model on the whole domain (tiles), bring
the forecast back to the input grid, write the output NetCDF and check that it has the input's
grid, coordinates and CRS. Prints one line per file with its timings; exits 1 if any fails.

    python scripts/check_radar_events.py --members 2 --steps 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
RADAR_DIR = REPO.parent / "shared" / "data" / "radar"


def check_event(pipeline, path: Path, members: int, steps: int) -> str:  # noqa: ANN001
    from service.netcdf_io import read_radar_netcdf, write_forecast_netcdf

    started = time.perf_counter()
    radar = read_radar_netcdf(path.read_bytes(), pipeline.config)
    read_s = time.perf_counter() - started
    forecast = pipeline.forecast(radar.model_rain_mm_h, members=members, steps=steps, seed=0)
    forecast_s = time.perf_counter() - started - read_s
    data = write_forecast_netcdf(
        radar.to_input_grid(forecast),
        radar,
        interval_s=pipeline.config.interval_s,
        attrs={"model_name": pipeline.config.name, "steps": steps, **radar.processing_attrs},
    )
    total_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "forecast.nc").write_bytes(data)
        return _compare(
            path, Path(tmp) / "forecast.nc", radar, pipeline, (read_s, forecast_s, total_s)
        )


def _compare(path, output, radar, pipeline, timings) -> str:  # noqa: ANN001
    read_s, forecast_s, total_s = timings
    with xr.open_dataset(path) as source, xr.open_dataset(output) as out:
        rate = next(
            name
            for name in source.data_vars
            if source[name].attrs.get("standard_name")
            in ("lwe_precipitation_rate", "equivalent_reflectivity_factor")
        )
        _, row, col = source[rate].dims
        for dim in (row, col):
            np.testing.assert_array_equal(out[dim].values, source[dim].values)
        mapping = source[rate].attrs.get("grid_mapping")
        if mapping:
            assert out[mapping].attrs.get("crs_wkt") == source[mapping].attrs.get("crs_wkt")
        steps_s = np.diff(out["time"].values).astype("timedelta64[s]").astype(int)
        assert (steps_s == pipeline.config.interval_s).all(), steps_s
        assert out["time"].values[0] > source["time"].values[-1]
        coverage = float(np.isfinite(out["precip_mean"].values[0]).mean())
    return (
        f"{path.relative_to(RADAR_DIR)}: {source.sizes[row]} x {source.sizes[col]} px OK "
        f"(read {read_s:.1f} s, forecast {forecast_s:.1f} s, total {total_s:.1f} s; "
        f"time: {radar.time_resampling}; block {radar.block[0]}x{radar.block[1]}; "
        f"output coverage {coverage:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model-dir", default=None, help="model folder (default: shipped)")
    parser.add_argument("files", nargs="*", type=Path, help="default: every event file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from models.metadata import DEFAULT_MODEL_DIR
    from models.pipeline import NowcastPipeline

    files = args.files or sorted(RADAR_DIR.glob("*.nc")) + sorted(RADAR_DIR.glob("*/*.nc"))
    if not files:
        print(f"no radar files in {RADAR_DIR}")
        return 1
    pipeline = NowcastPipeline.from_model_dir(args.model_dir or DEFAULT_MODEL_DIR)
    failed = 0
    started = time.perf_counter()
    for path in files:
        try:
            print(check_event(pipeline, path.resolve(), args.members, args.steps), flush=True)
        except Exception as exc:  # report every file, then fail
            failed += 1
            print(f"{path.name}: FAILED {type(exc).__name__}: {exc}", flush=True)
    print(
        f"{len(files) - failed} of {len(files)} events OK in {time.perf_counter() - started:.0f} s "
        f"({args.members} members, {args.steps} steps)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
