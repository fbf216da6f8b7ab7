"""`nowcast submit`: post a radar file, show the job's progress, download the forecast.

Uses the HTTP API only (raw `application/x-netcdf` body, parameters in the query), follows the
job's server-sent events (falling back to polling), and writes the result file.
Exit status: 0 forecast written, 1 the service refused or the job did not succeed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("successful", "failed", "dismissed")


class SubmitError(Exception):
    """The service answered with an error; the message is its problem detail."""


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('code', '')}: {body.get('detail', body)}"
    except ValueError:
        return f"{response.status_code}: {response.text[:500]}"


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in ("members", "steps", "seed", "products", "thresholds_mm_h", "percentiles"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.target_mm_h is not None:
        params["target_mm_h"] = args.target_mm_h
        if args.strength is not None:
            params["strength"] = args.strength
    return params


def submit(
    client: httpx.Client, radar: Path, params: dict[str, Any], idempotency_key: str | None
) -> dict[str, Any]:
    """POST the file; the job document."""
    headers = {"Content-Type": "application/x-netcdf"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    response = client.post(
        "/v1/nowcasts", params=params, content=radar.read_bytes(), headers=headers
    )
    if response.status_code != 202:
        raise SubmitError(_problem(response))
    return response.json()


def follow(
    client: httpx.Client, job: dict[str, Any], show_progress: bool, timeout_s: float
) -> dict[str, Any]:
    """Follow the job until it is terminal (SSE, or polling if the stream breaks)."""
    bar = tqdm(
        total=None,
        unit="step",
        desc=f"job {job['id'][:8]}",
        disable=not show_progress,
        file=sys.stderr,
    )
    deadline = time.monotonic() + timeout_s

    def show(document: dict[str, Any]) -> None:
        progress = document["progress"]
        if progress["total"] and bar.total != progress["total"]:
            bar.reset(total=progress["total"])
        bar.n = progress["step"]
        bar.set_postfix_str(document["status"])
        bar.refresh()

    try:
        try:
            with client.stream(
                "GET", f"/v1/nowcasts/{job['id']}/events", timeout=httpx.Timeout(10.0, read=60.0)
            ) as stream:
                if stream.status_code == 200:
                    for line in stream.iter_lines():
                        if line.startswith("data:"):
                            job = json.loads(line[5:])
                            show(job)
                            if job["status"] in TERMINAL:
                                return job
                        if time.monotonic() > deadline:
                            break
        except httpx.HTTPError:
            pass  # fall back to polling
        while time.monotonic() < deadline:
            response = client.get(f"/v1/nowcasts/{job['id']}")
            if response.status_code != 200:
                raise SubmitError(_problem(response))
            job = response.json()
            show(job)
            if job["status"] in TERMINAL:
                return job
            time.sleep(1.0)
        raise SubmitError(f"the job did not finish within {timeout_s:g} s (id {job['id']})")
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nowcast submit",
        description="Submit a radar sequence (CF-NetCDF) and download the ensemble forecast.",
    )
    parser.add_argument("radar", type=Path, help="input radar NetCDF file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="forecast NetCDF to write")
    parser.add_argument("--members", type=int, help="ensemble members (default 10)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--seed", type=int, help="random seed (same seed + input = same forecast)")
    parser.add_argument(
        "--target-mm-h", type=float, help="steer the forecast's mean rain rate to this [mm h-1]"
    )
    parser.add_argument("--strength", type=float, help="strength of that steering (default 1)")
    parser.add_argument("--products", help="comma-separated: members,mean,exceedance,percentiles")
    parser.add_argument(
        "--thresholds-mm-h",
        dest="thresholds_mm_h",
        help="comma-separated exceedance thresholds [mm h-1]",
    )
    parser.add_argument("--percentiles", help="comma-separated percentiles [%%]")
    parser.add_argument(
        "--url",
        default=os.environ.get("NOWCAST_URL", DEFAULT_URL),
        help=f"service URL (env NOWCAST_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("NOWCAST_API_KEY"), help="API key (env NOWCAST_API_KEY)"
    )
    parser.add_argument("--idempotency-key", help="resubmitting with the same key is safe")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="give up after this")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.radar.is_file():
        parser.error(f"no such file: {args.radar}")

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60.0) as client:
        try:
            job = submit(client, args.radar, _params(args), args.idempotency_key)
            print(
                f"job {job['id']} {job['status']} (seed {job['params']['seed']})", file=sys.stderr
            )
            job = follow(client, job, show_progress=not args.quiet, timeout_s=args.timeout_s)
            if job["status"] != "successful":
                error = job.get("error") or {}
                raise SubmitError(
                    f"job {job['id']} {job['status']}: {error.get('detail', 'no result')}"
                )
            response = client.get(f"/v1/nowcasts/{job['id']}/result")
            if response.status_code != 200:
                raise SubmitError(_problem(response))
        except (SubmitError, httpx.HTTPError) as exc:
            print(f"nowcast submit: {exc}", file=sys.stderr)
            return 1
    args.output.write_bytes(response.content)
    print(
        f"wrote {args.output} ({len(response.content)} bytes) from job {job['id']}", file=sys.stderr
    )
    return 0
