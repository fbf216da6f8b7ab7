"""Cut the small radar fixtures of the tests and the README sample from the shared radar events.

Source: ``../shared/data/radar/mch_20150515.nc`` (MeteoSwiss AQC composite, 2015-05-15
15:45-19:00 UTC, 5-min frames, 640 x 710 px at 1 km, Swiss oblique Mercator; pysteps example data).
Every crop keeps the CF attributes, the ``crs`` grid mapping and the x/y coordinates; pixels
outside radar coverage stay ``_FillValue``. Frames are the last ones of the event, where the
storm over the Swiss plateau is mature.

Writes:

- ``tests/data/mch_20150515_64.nc``: rows 464-527, columns 560-623 (64 x 64 px), last 9 frames
  (about half the pixels >= 1 mm/h, 4 % without coverage); a valid input for the ``tiny``
  config (grid factor 16, 300 s, 7 frames).
- ``examples/mch_20150515_256.nc``: rows 272-527, columns 352-607 (256 x 256 px), last 7 frames
  (a third of the pixels >= 1 mm/h); the README sample.
- ``examples/mch_20150515_256_dbz.nc``: the same crop as reflectivity in dBZ
  (``equivalent_reflectivity_factor``), from R with Marshall-Palmer Z = 200 R^1.6, rain-free
  pixels at -10 dBZ, packed as uint8 in 0.5 dBZ steps; shows the dBZ input path.

Run from the repository root: ``python scripts/make_fixtures.py [--radar-dir DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from models.units import MARSHALL_PALMER_A, MARSHALL_PALMER_B

SOURCE_FILE = "mch_20150515.nc"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_RADAR_DIR = REPO.parent / "shared" / "data" / "radar"

# (output path, first row, first column, side in px, frames at the end of the event)
TEST_CROP = (REPO / "tests" / "data" / "mch_20150515_64.nc", 464, 560, 64, 9)
EXAMPLE_CROP = (REPO / "examples" / "mch_20150515_256.nc", 272, 352, 256, 7)
EXAMPLE_DBZ = REPO / "examples" / "mch_20150515_256_dbz.nc"

# The weakest reflectivity written for rain-free pixels of the dBZ sample [dBZ].
NO_ECHO_DBZ = -10.0


def crop_event(
    radar_dir: Path, first_row: int, first_col: int, side_px: int, frames: int
) -> xr.Dataset:
    """A `(frames, side_px, side_px)` crop of the source event, attributes and crs kept."""
    source = radar_dir / SOURCE_FILE
    with xr.open_dataset(source) as ds:
        crop = ds.isel(
            time=slice(-frames, None),
            y=slice(first_row, first_row + side_px),
            x=slice(first_col, first_col + side_px),
        ).load()
    crop.attrs["history"] = (
        f"{crop.attrs.get('history', '')}\nscripts/make_fixtures.py: cropped rows "
        f"{first_row}-{first_row + side_px - 1}, columns {first_col}-{first_col + side_px - 1}, "
        f"last {frames} frames of {SOURCE_FILE}"
    ).strip()
    crop.attrs["crop_row0"] = np.int32(first_row)
    crop.attrs["crop_col0"] = np.int32(first_col)
    return crop


def to_reflectivity(ds: xr.Dataset) -> xr.Dataset:
    """The same crop with `precip` [mm h-1] replaced by `reflectivity` [dBZ] (Marshall-Palmer)."""
    rain = ds["precip"].values.astype(np.float64)
    with np.errstate(divide="ignore"):
        dbz = 10.0 * np.log10(MARSHALL_PALMER_A * np.power(rain, MARSHALL_PALMER_B))
    dbz = np.where(np.isnan(rain), np.nan, np.maximum(dbz, NO_ECHO_DBZ))
    out = ds.drop_vars("precip")
    out["reflectivity"] = (
        ds["precip"].dims,
        dbz.astype(np.float32),
        {
            "standard_name": "equivalent_reflectivity_factor",
            "long_name": "radar reflectivity",
            "units": "dBZ",
            "grid_mapping": "crs",
            "comment": "from the rain rate with Z = 200 R^1.6 (Marshall-Palmer); rain-free "
            f"pixels set to {NO_ECHO_DBZ:g} dBZ",
        },
    )
    out.attrs["comment"] = (
        f"{ds.attrs.get('comment', '')} Reflectivity made from the rain rate for the dBZ input "
        "example; not an original radar measurement."
    ).strip()
    return out


def write(ds: xr.Dataset, path: Path) -> None:
    """Write compressed, one chunk per frame, NaN stored as _FillValue = -1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding: dict[str, dict] = {}
    if "precip" in ds:
        _, height, width = ds["precip"].shape
        encoding["precip"] = {
            "dtype": "float32",
            "_FillValue": np.float32(-1.0),
            # the source's quantisation (multiples of 1/128 mm/h): it compresses well
            "least_significant_digit": 2,
        }
    if "reflectivity" in ds:
        _, height, width = ds["reflectivity"].shape
        # packed like operational products: 0.5 dBZ steps from -32 dBZ, 255 = no coverage
        encoding["reflectivity"] = {
            "dtype": "uint8",
            "scale_factor": 0.5,
            "add_offset": -32.0,
            "_FillValue": np.uint8(255),
        }
    for settings in encoding.values():
        settings.update(zlib=True, shuffle=True, complevel=6, chunksizes=(1, height, width))
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size / 1024:.0f} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radar-dir", type=Path, default=DEFAULT_RADAR_DIR)
    args = parser.parse_args(argv)
    for path, row, col, side, frames in (TEST_CROP, EXAMPLE_CROP):
        crop = crop_event(args.radar_dir, row, col, side, frames)
        write(crop, path)
        if path == EXAMPLE_CROP[0]:
            write(to_reflectivity(crop), EXAMPLE_DBZ)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
