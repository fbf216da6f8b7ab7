"""Cut the small radar fixtures of the tests and the README sample from the shared radar events.

Sources (``../shared/data/radar/``, pysteps example data, see its README):
``mch_20150515.nc`` (MeteoSwiss AQC composite, 2015-05-15 15:45-19:00 UTC, 5-min frames,
640 x 710 px at 1 km, Swiss oblique Mercator) and ``mrms_20190610_crop512.nc`` (NOAA MRMS
PrecipRate, 2019-06-10 00:00-01:10 UTC, 2-min frames, 512 x 512 px of 0.01 deg lat/lon). Every
crop keeps the CF attributes, the ``crs`` grid mapping and the coordinates; pixels outside radar
coverage stay ``_FillValue``. Frames are the last ones of each event.

Writes:

- ``tests/data/mch_20150515_64.nc``: mch rows 464-527, columns 560-623 (64 x 64 px), last 9
  frames (about half the pixels >= 1 mm/h, 4 % without coverage); a valid input for the
  ``tiny`` config (grid factor 16, 300 s, 7 frames).
- ``tests/data/mrms_20190610_64.nc``: mrms rows 200-263, columns 200-263 (64 x 64 px of
  lat/lon), last 9 frames at 120 s; the (time, lat, lon) layout.
- ``tests/data/cf/``: the CF tables ``cfchecks`` needs offline, from ``../shared/data/cf/``; the
  standard-name table is cut down to the names our inputs and outputs use.
- ``examples/mch_20150515_256.nc``: mch rows 272-527, columns 352-607 (256 x 256 px), last 7
  frames (a third of the pixels >= 1 mm/h); the README sample.
- ``examples/mch_20150515_256_dbz.nc``: the same crop as reflectivity in dBZ
  (``equivalent_reflectivity_factor``), from R with Marshall-Palmer Z = 200 R^1.6, rain-free
  pixels at -10 dBZ, packed as uint8 in 0.5 dBZ steps; shows the dBZ input path.

Run from the repository root: ``python scripts/make_fixtures.py [--shared-dir DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import xarray as xr

from models.units import MARSHALL_PALMER_A, MARSHALL_PALMER_B

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED_DIR = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class Crop:
    """A window of the last `frames` frames of a source event."""

    path: Path
    source: str
    first_row: int
    first_col: int
    side_px: int
    frames: int


TEST_CROP = Crop(REPO / "tests" / "data" / "mch_20150515_64.nc", "mch_20150515.nc", 464, 560, 64, 9)
TEST_LATLON_CROP = Crop(
    REPO / "tests" / "data" / "mrms_20190610_64.nc", "mrms_20190610_crop512.nc", 200, 200, 64, 9
)
EXAMPLE_CROP = Crop(REPO / "examples" / "mch_20150515_256.nc", "mch_20150515.nc", 272, 352, 256, 7)
EXAMPLE_DBZ = REPO / "examples" / "mch_20150515_256_dbz.nc"
CF_TABLES_DIR = REPO / "tests" / "data" / "cf"

# The weakest reflectivity written for rain-free pixels of the dBZ sample [dBZ].
NO_ECHO_DBZ = -10.0
# Standard names used by the radar inputs and the forecast output: the cut-down CF table.
STANDARD_NAMES = (
    "equivalent_reflectivity_factor",
    "forecast_period",
    "forecast_reference_time",
    "latitude",
    "longitude",
    "lwe_precipitation_rate",
    "projection_x_coordinate",
    "projection_y_coordinate",
    "realization",
    "time",
)


def crop_event(radar_dir: Path, crop: Crop) -> xr.Dataset:
    """A `(frames, side_px, side_px)` crop of the source event, attributes and crs kept."""
    with xr.open_dataset(radar_dir / crop.source) as ds:
        _, row_dim, col_dim = ds["precip"].dims
        rows = slice(crop.first_row, crop.first_row + crop.side_px)
        cols = slice(crop.first_col, crop.first_col + crop.side_px)
        out = ds.isel({"time": slice(-crop.frames, None), row_dim: rows, col_dim: cols}).load()
    out.attrs["history"] = (
        f"{out.attrs.get('history', '')}\nscripts/make_fixtures.py: cropped rows "
        f"{rows.start}-{rows.stop - 1}, columns {cols.start}-{cols.stop - 1}, last "
        f"{crop.frames} frames of {crop.source}"
    ).strip()
    out.attrs["crop_row0"] = np.int32(crop.first_row)
    out.attrs["crop_col0"] = np.int32(crop.first_col)
    return out


def cut_cf_tables(cf_dir: Path, out_dir: Path) -> None:
    """Copy the CF tables for offline `cfchecks`, the standard-name table cut to our names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tree = ElementTree.parse(cf_dir / "cf-standard-name-table.xml")
    root = tree.getroot()
    for element in list(root):
        if element.tag == "alias" or (
            element.tag == "entry" and element.get("id") not in STANDARD_NAMES
        ):
            root.remove(element)
    kept = sorted(e.get("id") for e in root.iter("entry"))
    if kept != sorted(STANDARD_NAMES):
        raise SystemExit(
            f"standard names missing from the CF table: {set(STANDARD_NAMES) - set(kept)}"
        )
    tree.write(out_dir / "cf-standard-name-table.xml", encoding="utf-8", xml_declaration=True)
    for name in ("area-type-table.xml", "standardized-region-list.xml"):
        shutil.copyfile(cf_dir / name, out_dir / name)
    print(f"wrote {out_dir.relative_to(REPO)}/ (CF tables, {len(kept)} standard names)")


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
    parser.add_argument("--shared-dir", type=Path, default=DEFAULT_SHARED_DIR)
    args = parser.parse_args(argv)
    radar_dir = args.shared_dir / "radar"
    for crop in (TEST_CROP, TEST_LATLON_CROP, EXAMPLE_CROP):
        write(crop_event(radar_dir, crop), crop.path)
    write(to_reflectivity(crop_event(radar_dir, EXAMPLE_CROP)), EXAMPLE_DBZ)
    cut_cf_tables(args.shared_dir / "cf", CF_TABLES_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
