"""Size and write time of a realistic forecast file: `python -m benchmarks.forecast_netcdf`.

The forecast is 10 members x 12 lead times x 256 x 256 px built from real MeteoSwiss rain fields
(`../shared/data/radar/mch_20150515.nc`): each member is a 12-frame window of the event at its own
offset, times a smooth random factor, with 1 % per-pixel jitter and a light drizzle, so that values
carry full float32 mantissas the way the decoder's output does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import xarray as xr

from models.config import SMALL
from service.netcdf_io import read_radar_netcdf, write_forecast_netcdf

RADAR_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "radar" / "mch_20150515.nc"


def realistic_forecast(
    rng: np.random.Generator, members: int = 10, leads: int = 12, side: int = 256
) -> tuple[bytes, np.ndarray]:
    """(input NetCDF bytes of 7 past frames, forecast `(members, leads, side, side)` mm h-1)."""
    with xr.open_dataset(RADAR_FILE) as source:
        crop = source.isel(
            time=slice(0, 7 + leads + members), y=slice(200, 200 + side), x=slice(300, 300 + side)
        ).load()
    past = bytes(crop.isel(time=slice(0, 7)).to_netcdf())
    future = np.nan_to_num(crop["precip"].values[7:], nan=0.0)
    out = []
    for member in range(members):
        field = future[member : member + leads]
        smooth = np.kron(rng.standard_normal((leads, side // 16, side // 16)), np.ones((1, 16, 16)))
        jitter = 1 + 0.01 * rng.standard_normal(field.shape)
        drizzle = np.maximum(rng.normal(0, 0.02, field.shape), 0)
        out.append(field * np.exp(0.3 * smooth) * jitter + drizzle)
    return past, np.stack(out).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    past, forecast = realistic_forecast(np.random.default_rng(0))
    radar = read_radar_netcdf(past, SMALL)
    attrs = {"model_name": "small", "job_id": "benchmark", "steps": 50, "seed": 0}
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        data = write_forecast_netcdf(forecast, radar, interval_s=SMALL.interval_s, attrs=attrs)
        times.append(time.perf_counter() - started)
    print(
        f"forecast {forecast.shape}: {len(data) / 1e6:.2f} MB, write {min(times):.2f} s "
        f"(best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
