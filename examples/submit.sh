#!/usr/bin/env bash
# Submit the shipped radar sample with the `nowcast` CLI and download the forecast.
#   bash examples/submit.sh [URL]        (default http://127.0.0.1:8000; NOWCAST_API_KEY if auth is on)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
url="${1:-${NOWCAST_URL:-http://127.0.0.1:8000}}"
nowcast submit "$here/mch_20150515_256.nc" -o forecast.nc \
  --members 10 --seed 42 --url "$url"
python - <<'PY'
import xarray as xr
with xr.open_dataset("forecast.nc") as ds:
    print(ds["precip"].dims, ds["precip"].shape, ds["precip"].attrs["units"])
    print("lead times:", [str(t)[:16] for t in ds["time"].values])
    print("P(> 1 mm/h) max:", float(ds["probability_of_lwe_precipitation_rate_above_threshold"].sel(threshold=1.0).max()))
PY
