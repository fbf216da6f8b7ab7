"""Admission control: estimate a job's result size and worker peak memory at submit, refuse it
there when over the deployment's limits (`Settings.max_result_bytes`,
`Settings.worker_memory_bytes`), instead of a worker being OOM-killed on every delivery later.

The estimate, for M members, T_out lead times, an H x W grid, K thresholds and P percentiles:

    result_bytes = 4 * T_out * H * W * (M [members] + 1 [mean] + K [exceedance] + P [percentiles])

(float32 fields, counted only for the products asked for; an upper bound: zlib shrinks dry areas a
lot, rain fields little), and

    worker_peak_bytes = WORKER_BASE_BYTES + WORKER_BYTES_PER_MEMBER_CELL * M * H * W
                        + 2 * result_bytes

the model and runtime (base), the sampler's and decoder's per-member working set (latents, decoded
frames, the extrapolation it is anchored on), and the products plus their encoded NetCDF copy.
The two constants are calibrated by measurement (see below): peak RSS of a worker-equivalent
job (read the radar file, `forecast_batch` with small-v3 on CPU, write the NetCDF).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.queue.jobs import JobParams

# Calibration (2026-11-29, `python benchmarks/worker_memory.py`: small-v3 on CPU, T_out = 12,
# default products, peak RSS of a worker-equivalent process; the decoder bounded by pixels per
# call and the products computed member by member): 20 x 256^2: 1,172 MiB; 20 x 512^2: 2,238
# MiB; 63 x 256^2: 1,561 MiB. The slope between the first two is 284 B per member-cell and the
# base 817 MiB; rounded up to 400 B and 1,000 MiB, with the product term on top, the estimates
# are 1,650 / 3,600 / 2,980 MiB: 40-90 % above the measured peaks, room for what the benchmark
# does not run (guidance's gradient, more steps). The constant before (1,200 B, from a run
# before the decoder was bounded) refused 20 x 512^2 at the default 6 GiB.
WORKER_BASE_BYTES = 1000 * 1024 * 1024
WORKER_BYTES_PER_MEMBER_CELL = 400

_FLOAT32 = 4


@dataclass(frozen=True)
class JobEstimate:
    """What a job will take: its result file [bytes] and its worker's peak memory [bytes]."""

    result_bytes: int
    worker_peak_bytes: int


def estimate_job(params: JobParams, height: int, width: int, frames_out: int) -> JobEstimate:
    """The module docstring's estimate for one job on an H x W grid with `frames_out` leads."""
    fields = 0
    if "members" in params.products:
        fields += params.members
    if "mean" in params.products:
        fields += 1
    if "exceedance" in params.products:
        fields += len(params.thresholds_mm_h)
    if "percentiles" in params.products:
        fields += len(params.percentiles)
    cells = height * width
    result = _FLOAT32 * frames_out * cells * fields
    peak = WORKER_BASE_BYTES + WORKER_BYTES_PER_MEMBER_CELL * params.members * cells + 2 * result
    return JobEstimate(result_bytes=result, worker_peak_bytes=peak)


def refusal(estimate: JobEstimate, max_result_bytes: int, worker_memory_bytes: int) -> str | None:
    """Why the job cannot be admitted (naming the limit and what to ask for instead), or None."""
    advice = (
        "ask for fewer members, fewer thresholds or percentiles, fewer products (e.g. "
        "products=mean,exceedance without members), or a smaller grid"
    )
    if estimate.result_bytes > max_result_bytes:
        return (
            f"the forecast file would take about {_mb(estimate.result_bytes)} MB, above this "
            f"service's limit of {_mb(max_result_bytes)} MB (max_result_bytes); {advice}"
        )
    if estimate.worker_peak_bytes > worker_memory_bytes:
        return (
            f"the job would need about {_mb(estimate.worker_peak_bytes)} MB of worker memory, "
            f"above this service's limit of {_mb(worker_memory_bytes)} MB "
            f"(worker_memory_bytes); {advice}"
        )
    return None


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.0f}"
