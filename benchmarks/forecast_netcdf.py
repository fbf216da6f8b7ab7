"""Size and write time of a realistic forecast file: `python -m benchmarks.forecast_netcdf`.

The forecast is 20 members (`--members`) x 12 lead times x 256 x 256 px built from real
MeteoSwiss rain fields
(`../shared/data/radar/mch_20150515.nc`): each member is a 12-frame window of the event at its own
offset, times a smooth random factor, with 1 % per-pixel jitter and a light drizzle, so that values
carry full float32 mantissas the way the decoder's output does.

Every storage setting (`service.forecast_output.Compression`: zlib level, shuffle, chunk shape)
writes the same forecast with the default products, `--repeats` times, settings interleaved so
that background load hits them alike; the report gives size, median and best wall time, median
CPU time of this process, and size and CPU time against the default setting's.

    python -m benchmarks.forecast_netcdf [--members 20] [--repeats 3] [--levels 0,1,2,4,9]
        [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import xarray as xr

from models.config import SMALL
from service.forecast_output import DEFAULT_COMPRESSION, Compression
from service.netcdf_io import read_radar_netcdf, write_forecast_netcdf

RADAR_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "radar" / "mch_20150515.nc"
LEVELS = (0, 1, 2, 4, 9)


def storage_settings(levels: tuple[int, ...] = LEVELS) -> list[Compression]:
    """The default, each zlib level with and without shuffle on frame chunks (level 0 once),
    then the other chunk shapes at the default level."""
    settings = [DEFAULT_COMPRESSION]
    for level in levels:
        settings += [Compression(complevel=level, shuffle=shuffle) for shuffle in (True, False)]
    settings += [Compression(chunking="leads"), Compression(chunking="library")]
    unique = [s for s in settings if s.complevel > 0 or not s.shuffle]  # shuffle alone: no-op
    return list(dict.fromkeys(unique))


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


def label(setting: Compression) -> str:
    shuffle = "shuffle" if setting.shuffle else "no-shuffle"
    return f"zlib{setting.complevel} {shuffle} {setting.chunking}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--levels", default=",".join(map(str, LEVELS)), help="zlib levels, comma-separated"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    past, forecast = realistic_forecast(np.random.default_rng(0), members=args.members)
    radar = read_radar_netcdf(past, SMALL)
    attrs = {"model_name": "small", "job_id": "benchmark", "steps": 50, "seed": 0}
    settings = storage_settings(tuple(int(level) for level in args.levels.split(",")))
    # wall time, and this process's CPU time: on a shared machine the CPU time is what the
    # setting costs, the wall time adds whatever else ran
    times: dict[Compression, list[float]] = {setting: [] for setting in settings}
    cpu_times: dict[Compression, list[float]] = {setting: [] for setting in settings}
    sizes: dict[Compression, int] = {}
    for _ in range(args.repeats):
        for setting in settings:
            started, started_cpu = time.perf_counter(), time.process_time()
            data = write_forecast_netcdf(
                forecast, radar, interval_s=SMALL.interval_s, attrs=attrs, compression=setting
            )
            times[setting].append(time.perf_counter() - started)
            cpu_times[setting].append(time.process_time() - started_cpu)
            sizes[setting] = len(data)
    default_cpu_s = statistics.median(cpu_times[DEFAULT_COMPRESSION])
    rows = [
        {
            "setting": label(setting),
            "complevel": setting.complevel,
            "shuffle": setting.shuffle,
            "chunking": setting.chunking,
            "default": setting == DEFAULT_COMPRESSION,
            "mb": sizes[setting] / 1e6,
            "median_s": statistics.median(times[setting]),
            "best_s": min(times[setting]),
            "times_s": times[setting],
            "median_cpu_s": statistics.median(cpu_times[setting]),
            "cpu_times_s": cpu_times[setting],
            "size_vs_default": sizes[setting] / sizes[DEFAULT_COMPRESSION],
            "cpu_vs_default": statistics.median(cpu_times[setting]) / default_cpu_s,
        }
        for setting in settings
    ]
    print(
        f"forecast {forecast.shape}, default products, {args.repeats} repeats, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'setting':30s} {'MB':>6s} {'wall s':>7s} {'best s':>7s} {'CPU s':>6s} "
        f"{'size':>6s} {'CPU':>6s}  (median; size, CPU: / default)"
    )
    for row in rows:
        mark = " (default)" if row["default"] else ""
        print(
            f"{row['setting'] + mark:30s} {row['mb']:6.2f} {row['median_s']:7.2f} "
            f"{row['best_s']:7.2f} {row['median_cpu_s']:6.2f} {row['size_vs_default']:6.2f} "
            f"{row['cpu_vs_default']:6.2f}"
        )
    if args.json is not None:
        summary = {"shape": forecast.shape, "repeats": args.repeats, "load": os.getloadavg()}
        args.json.write_text(json.dumps({**summary, "settings": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
