#!/usr/bin/env bash
# The HTTP API with curl: submit, follow the events, fetch the result, list, cancel.
#   bash examples/curl.sh [URL]          (default http://127.0.0.1:8000; NOWCAST_API_KEY if auth is on)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
url="${1:-${NOWCAST_URL:-http://127.0.0.1:8000}}"
auth=()
if [ -n "${NOWCAST_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer $NOWCAST_API_KEY"); fi

# 1. what the model accepts
curl -sS "${auth[@]}" "$url/v1/models"; echo

# 2. submit: the NetCDF as the body, parameters in the query -> 202 + Location + job document
job=$(curl -sS "${auth[@]}" -X POST \
  -H "Content-Type: application/x-netcdf" -H "Idempotency-Key: example-$(date +%s)" \
  --data-binary @"$here/mch_20150515_256.nc" \
  "$url/v1/nowcasts?members=4&seed=7&thresholds_mm_h=0.5,2")
echo "$job"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job")

# 3. progress as server-sent events, until the job is done (or poll GET /v1/nowcasts/$id)
curl -sS -N "${auth[@]}" "$url/v1/nowcasts/$id/events" | grep '^data:' | cut -c1-160

# 4. the forecast as CF-NetCDF
curl -sS "${auth[@]}" -o "forecast-$id.nc" -w "result: HTTP %{http_code}, %{size_download} bytes\n" \
  "$url/v1/nowcasts/$id/result"

# 5. the same as multipart (file part `radar`, JSON part `params`), then cancel it
job2=$(curl -sS "${auth[@]}" -F radar=@"$here/mch_20150515_256.nc" \
  -F 'params={"members": 2, "steps": 200, "constraint": {"type": "mean_intensity", "target_mm_h": 5}}' \
  "$url/v1/nowcasts")
id2=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job2")
curl -sS "${auth[@]}" -X DELETE "$url/v1/nowcasts/$id2" | cut -c1-160; echo

# 6. my recent jobs
curl -sS "${auth[@]}" "$url/v1/nowcasts?limit=5" | cut -c1-300; echo
