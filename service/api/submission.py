"""The job service behind both HTTP faces (`/v1/nowcasts` and OGC API - Processes).

Submitting (parameters + radar file -> validated `Job` in the store) and fetching a result are
done here once, so the two routers only translate their own wire formats to and from these calls.
Every refusal is a `ProblemError` with the same code and detail whichever face was used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.admission import estimate_job, refusal
from service.api.deps import ServiceState
from service.api.errors import ProblemError, describe_errors, validation_errors
from service.api.schemas import MAX_SEED, NowcastParams
from service.netcdf_io import RadarInput, RadarInputError, read_radar_netcdf
from service.queue.constants import JobStatus
from service.queue.jobs import Constraint, Job, JobParams, new_job_id
from service.queue.store import (
    Idempotency,
    IdempotencyConflictError,
    QueueFullError,
    SubmitResult,
    TenantQuotaError,
)

logger = logging.getLogger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def check_idempotency_key(idempotency_key: str | None) -> None:
    """400 unless the key is absent or 1-255 visible ASCII characters."""
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ProblemError(
            400,
            "bad-idempotency-key",
            "Idempotency-Key must be 1-255 visible ASCII characters (e.g. a UUID)",
        )


async def check_queue_room(state: ServiceState) -> None:
    """503 when the queue is at its limit; checked before the upload is read, so a full queue
    does not make the client upload megabytes."""
    if await run_in_threadpool(state.store.active_count) >= state.settings.max_queue_length:
        raise queue_full(state)


def queue_full(state: ServiceState) -> ProblemError:
    retry_after = str(state.settings.retry_after_s * 6)
    return ProblemError(
        503,
        "queue-full",
        f"the queue holds its limit of {state.settings.max_queue_length} jobs; retry after "
        f"{retry_after} s",
        headers={"Retry-After": retry_after},
    )


def validate_params(raw: dict[str, Any], state: ServiceState) -> NowcastParams:
    """The request's parameters, or 422 naming every bad one."""
    try:
        params = NowcastParams.model_validate(raw)
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        raise ProblemError(
            422, "invalid-parameters", describe_errors(errors), extra={"errors": errors}
        ) from exc
    max_steps = state.model.config.diffusion.num_train_steps
    if params.steps is not None and params.steps > max_steps:
        raise ProblemError(
            422,
            "invalid-parameters",
            f"steps: {params.steps} exceeds the model's {max_steps} diffusion steps; ask for "
            f"at most {max_steps} (default {state.model.config.diffusion.sampling_steps})",
        )
    return params


def _validate_radar(data: bytes, state: ServiceState) -> RadarInput:
    try:
        # validation only: the worker brings the frames onto the model's times
        return read_radar_netcdf(
            data,
            state.model.config,
            zr_a=state.settings.zr_a,
            zr_b=state.settings.zr_b,
            resample=False,
        )
    except RadarInputError as exc:
        # every problem also as a list, for clients that show them one by one
        problems = [{"code": p.code, "message": p.detail} for p in exc.problems]
        raise ProblemError(exc.status, exc.code, exc.detail, extra={"errors": problems}) from exc


def _admit(job: Job, state: ServiceState) -> None:
    """422 when the job's estimated result or worker memory is over the deployment's limits."""
    _, height, width = job.input_shape
    estimate = estimate_job(job.params, height, width, state.model.config.frames_out)
    reason = refusal(estimate, state.settings.max_result_bytes, state.settings.worker_memory_bytes)
    if reason is not None:
        raise ProblemError(
            422,
            "job-too-large",
            reason,
            extra={
                "estimate": {
                    "result_bytes": estimate.result_bytes,
                    "worker_peak_bytes": estimate.worker_peak_bytes,
                },
                "limits": {
                    "max_result_bytes": state.settings.max_result_bytes,
                    "worker_memory_bytes": state.settings.worker_memory_bytes,
                },
            },
        )


def draw_seed() -> int:
    """A random seed below 2^53, so that JavaScript clients read it back exactly."""
    return secrets.randbelow(MAX_SEED + 1)


async def create_job(
    state: ServiceState,
    tenant: str,
    data: bytes,
    raw_params: dict[str, Any],
    idempotency_key: str | None = None,
) -> SubmitResult:
    """Validate the parameters and the radar file, then store and enqueue the job.

    Parameters
    ----------
    data : bytes
        The radar CF-NetCDF file as uploaded.
    raw_params : dict
        Parameters as `NowcastParams` fields, not yet validated.
    idempotency_key : str, optional
        The same key and payload return the job made the first time.
    """
    store = state.store
    params = validate_params(raw_params, state)
    radar = await run_in_threadpool(_validate_radar, data, state)

    input_sha256 = hashlib.sha256(data).hexdigest()
    requested = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    fingerprint = hashlib.sha256(f"{input_sha256}\n{requested}".encode()).hexdigest()
    config = state.model.config
    job = Job(
        id=new_job_id(),
        tenant=tenant,
        params=JobParams(
            members=params.members or state.settings.default_members,
            steps=params.steps or config.diffusion.sampling_steps,
            # drawn here, not in the worker, so a redelivered job reproduces the same forecast
            seed=params.seed if params.seed is not None else draw_seed(),
            constraint=Constraint(**params.constraint.model_dump()) if params.constraint else None,
            products=tuple(params.products),
            thresholds_mm_h=tuple(params.thresholds_mm_h),
            percentiles=tuple(params.percentiles),
        ),
        input_shape=tuple(int(n) for n in radar.rain_mm_h.shape),
        input_sha256=input_sha256,
        model=f"{state.model.name}-{state.model.version}",
    )
    _admit(job, state)
    idempotency = Idempotency(idempotency_key, fingerprint) if idempotency_key else None
    try:
        submitted = await run_in_threadpool(store.submit, job, data, idempotency)
    except TenantQuotaError:
        retry_after = str(state.settings.retry_after_s * 6)
        limit = store.policy.tenant_limit
        raise ProblemError(
            429,
            "tenant-quota",
            f"this API key's tenant has its limit of {limit} jobs waiting or running "
            f"(max_jobs_per_tenant); retry after {retry_after} s, once some have finished",
            headers={"Retry-After": retry_after},
        ) from None
    except QueueFullError:
        raise queue_full(state) from None
    except IdempotencyConflictError:
        raise ProblemError(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was already used with a different file or parameters; use a "
            "new key for a new request",
        ) from None
    job = submitted.job
    if submitted.created:
        logger.info(
            "job=%s accepted tenant=%s input=%s members=%d steps=%d",
            job.id,
            tenant,
            "x".join(map(str, job.input_shape)),
            job.params.members,
            job.params.steps,
        )
    else:
        logger.info("job=%s returned again for its Idempotency-Key tenant=%s", job.id, tenant)
    return submitted


def read_result(job: Job, state: ServiceState) -> bytes:
    """The forecast NetCDF of a successful job; 404 while it runs or when it has none, 410 once
    expired."""
    _check_has_result(job, state)
    data = state.store.get_result(job.id)
    if data is None:
        raise _result_expired(state)
    return data


def open_result(job: Job, state: ServiceState) -> Iterator[bytes]:
    """`read_result` as chunks read from the blob store, for a download that streams (a result
    of hundreds of MB is never held whole in the API)."""
    _check_has_result(job, state)
    chunks = state.store.open_result(job.id)
    if chunks is None:
        raise _result_expired(state)
    return chunks


def _result_expired(state: ServiceState) -> ProblemError:
    return ProblemError(
        410,
        "result-expired",
        f"the result expired ({state.settings.result_ttl_s} s after the job finished); "
        "submit the job again",
    )


def _check_has_result(job: Job, state: ServiceState) -> None:
    if job.status in (JobStatus.ACCEPTED, JobStatus.RUNNING):
        where = (
            f"running, step {job.progress_step} of {job.progress_total}"
            if job.status is JobStatus.RUNNING
            else "waiting in the queue"
        )
        raise ProblemError(
            404,
            "result-not-ready",
            f"the job is {where}; poll its status or follow its events and fetch the result "
            "once it is successful",
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )
    if job.status is not JobStatus.SUCCESSFUL:
        reason = f": {job.error_detail}" if job.error_detail else ""
        raise ProblemError(
            404,
            "no-result",
            f"the job is {job.status.value}{reason}; "
            "it has no result, submit it again if you still need it",
        )
