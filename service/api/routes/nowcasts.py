"""`/v1/nowcasts`: submit, status, events (SSE), result, cancel, list."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import OwnedJobDep, ServiceState, StateDep, StoreDep, TenantDep
from service.api.errors import ProblemError, describe_errors, validation_errors
from service.api.schemas import MAX_SEED, JobList, JobOut, Link, NowcastParams
from service.api.upload import read_submission
from service.netcdf_io import RadarInput, RadarInputError, read_radar_netcdf
from service.queue.constants import JobStatus
from service.queue.jobs import Constraint, Job, JobParams, new_job_id
from service.queue.store import Idempotency, IdempotencyConflictError, QueueFullError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/nowcasts", tags=["nowcasts"])

NETCDF = "application/x-netcdf"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_SSE_KEEPALIVE_S = 15.0

_PROBLEM = {"content": {"application/problem+json": {}}}


def links_for(request: Request, job: Job) -> list[Link]:
    """Links of a job's status document: itself, its event stream and (once done) its result."""
    links = [
        Link(
            href=str(request.url_for("get_nowcast", job_id=job.id)),
            rel="self",
            type="application/json",
            title="job status",
        ),
        Link(
            href=str(request.url_for("stream_nowcast_events", job_id=job.id)),
            rel="monitor",
            type="text/event-stream",
            title="status and progress events",
        ),
    ]
    if job.status is JobStatus.SUCCESSFUL:
        links.append(
            Link(
                href=str(request.url_for("get_nowcast_result", job_id=job.id)),
                rel="http://www.opengis.net/def/rel/ogc/1.0/results",
                type=NETCDF,
                title="forecast ensemble (CF-NetCDF)",
            )
        )
    return links


def job_body(request: Request, job: Job) -> dict[str, Any]:
    return JobOut.from_job(job, links_for(request, job)).model_dump(mode="json")


# ---------------------------------------------------------------------------------- submit


def submit_query(
    members: Annotated[int | None, Query(description="ensemble members, 1-64 (default 10)")] = None,
    steps: Annotated[int | None, Query(description="sampler steps (default: the model's)")] = None,
    seed: Annotated[int | None, Query(description="random seed (default: drawn)")] = None,
    products: Annotated[
        str | None, Query(description="comma-separated: members, mean, exceedance, percentiles")
    ] = None,
    thresholds_mm_h: Annotated[
        str | None, Query(description="comma-separated exceedance thresholds [mm h-1]")
    ] = None,
    percentiles: Annotated[str | None, Query(description="comma-separated percentiles [%]")] = None,
    constraint: Annotated[
        str | None,
        Query(description='JSON, e.g. {"type": "mean_intensity", "target_mm_h": 8}'),
    ] = None,
    target_mm_h: Annotated[
        float | None, Query(description="shorthand for a mean_intensity constraint [mm h-1]")
    ] = None,
    strength: Annotated[
        float | None, Query(description="strength of the target_mm_h constraint (default 1)")
    ] = None,
) -> dict[str, Any]:
    """Parameters given in the query string, as a dict for `NowcastParams`."""
    params: dict[str, Any] = {}
    for name, value in (("members", members), ("steps", steps), ("seed", seed)):
        if value is not None:
            params[name] = value
    for name, value in (
        ("products", products),
        ("thresholds_mm_h", thresholds_mm_h),
        ("percentiles", percentiles),
    ):
        if value is not None:
            params[name] = [item.strip() for item in value.split(",") if item.strip()]
    if constraint is not None:
        try:
            params["constraint"] = json.loads(constraint)
        except json.JSONDecodeError as exc:
            raise ProblemError(
                400,
                "bad-constraint-json",
                f"the `constraint` query parameter is not valid JSON ({exc.msg}); send e.g. "
                '{"type": "mean_intensity", "target_mm_h": 8.0}',
            ) from exc
    elif target_mm_h is not None:
        params["constraint"] = {"type": "mean_intensity", "target_mm_h": target_mm_h}
        if strength is not None:
            params["constraint"]["strength"] = strength
    return params


def _validate_params(raw: dict[str, Any], state: ServiceState) -> NowcastParams:
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
        return read_radar_netcdf(
            data, state.model.config, zr_a=state.settings.zr_a, zr_b=state.settings.zr_b
        )
    except RadarInputError as exc:
        raise ProblemError(exc.status, exc.code, exc.detail) from exc


def _queue_full(state: ServiceState) -> ProblemError:
    retry_after = str(state.settings.retry_after_s * 6)
    return ProblemError(
        503,
        "queue-full",
        f"the queue holds its limit of {state.settings.max_queue_length} jobs; retry after "
        f"{retry_after} s",
        headers={"Retry-After": retry_after},
    )


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a nowcast",
    responses={
        400: _PROBLEM,
        401: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
        503: _PROBLEM,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                NETCDF: {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["radar"],
                        "properties": {
                            "radar": {"type": "string", "format": "binary"},
                            "params": {
                                "type": "string",
                                "description": "NowcastParams as JSON",
                                "contentMediaType": "application/json",
                            },
                        },
                    }
                },
            },
        }
    },
)
async def submit_nowcast(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    query: Annotated[dict[str, Any], Depends(submit_query)],
    idempotency_key: Annotated[
        str | None,
        Header(description="the same key and payload return the same job (24 h)"),
    ] = None,
) -> JSONResponse:
    """Submit a radar sequence (CF-NetCDF) for an ensemble nowcast; answers 202 and the job."""
    store = state.store
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ProblemError(
            400,
            "bad-idempotency-key",
            "Idempotency-Key must be 1-255 visible ASCII characters (e.g. a UUID)",
        )
    # cheap check first, so a full queue does not make the client upload megabytes
    if await run_in_threadpool(store.active_count) >= state.settings.max_queue_length:
        raise _queue_full(state)
    data, body_params = await read_submission(request)
    params = _validate_params({**query, **body_params}, state)
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
            seed=params.seed if params.seed is not None else secrets.randbelow(MAX_SEED),
            constraint=Constraint(**params.constraint.model_dump()) if params.constraint else None,
            products=tuple(params.products),
            thresholds_mm_h=tuple(params.thresholds_mm_h),
            percentiles=tuple(params.percentiles),
        ),
        input_shape=tuple(int(n) for n in radar.rain_mm_h.shape),
        input_sha256=input_sha256,
        model=f"{state.model.name}-{state.model.version}",
    )
    idempotency = Idempotency(idempotency_key, fingerprint) if idempotency_key else None
    try:
        submitted = await run_in_threadpool(store.submit, job, data, idempotency)
    except QueueFullError:
        raise _queue_full(state) from None
    except IdempotencyConflictError:
        raise ProblemError(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was already used with a different file or parameters; use a "
            "new key for a new request",
        ) from None
    job = submitted.job
    headers = {
        "Location": str(request.url_for("get_nowcast", job_id=job.id)),
        "Retry-After": str(state.settings.retry_after_s),
    }
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
        headers["Idempotent-Replayed"] = "true"
        logger.info("job=%s returned again for its Idempotency-Key tenant=%s", job.id, tenant)
    return JSONResponse(job_body(request, job), status_code=202, headers=headers)


# ---------------------------------------------------------------------------------- read


@router.get("", response_model=JobList, summary="List my nowcasts", responses={401: _PROBLEM})
def list_nowcasts(
    request: Request,
    tenant: TenantDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    # bounded: Redis refuses indices past 64 bits, and no tenant keeps a million jobs
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="jobs to skip (newest first)")
    ] = 0,
) -> JobList:
    """The caller's recent jobs, newest first, paged."""
    jobs, total = store.list_jobs(tenant, offset, limit)
    links = []
    if offset + limit < total:
        links.append(
            Link(
                href=str(request.url.include_query_params(offset=offset + limit)),
                rel="next",
                type="application/json",
            )
        )
    if offset > 0:
        previous = max(0, offset - limit)
        links.append(
            Link(
                href=str(request.url.include_query_params(offset=previous)),
                rel="prev",
                type="application/json",
            )
        )
    items = [JobOut.from_job(job, links_for(request, job)) for job in jobs]
    return JobList(items=items, total=total, offset=offset, limit=limit, links=links)


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Status of a nowcast",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
def get_nowcast(request: Request, job: OwnedJobDep) -> JSONResponse:
    """Status, progress, timestamps and links of one job."""
    return JSONResponse(job_body(request, job))


@router.get(
    "/{job_id}/events",
    summary="Status events of a nowcast (SSE)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 401: _PROBLEM, 404: _PROBLEM},
)
async def stream_nowcast_events(
    request: Request, job: OwnedJobDep, state: StateDep
) -> StreamingResponse:
    """Server-sent events: an `status` event (the job document) on every change, until done."""
    return StreamingResponse(
        _job_events(request, state, job.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _job_events(request: Request, state: ServiceState, job_id: str) -> AsyncIterator[str]:
    last_seen: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    event_id = 0
    while True:
        job = await run_in_threadpool(state.store.get, job_id)
        if job is None:
            return
        seen = (job.status, job.progress_step, job.progress_total, job.cancel_requested)
        if seen != last_seen:
            event_id += 1
            yield (f"id: {event_id}\nevent: status\ndata: {json.dumps(job_body(request, job))}\n\n")
            last_seen, last_sent = seen, time.monotonic()
        elif time.monotonic() - last_sent > _SSE_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if job.status.is_terminal or await request.is_disconnected():
            return
        await asyncio.sleep(state.settings.sse_poll_interval_s)


@router.get(
    "/{job_id}/result",
    summary="Forecast of a nowcast (CF-NetCDF)",
    response_class=Response,
    responses={
        200: {"content": {NETCDF: {"schema": {"type": "string", "format": "binary"}}}},
        401: _PROBLEM,
        404: _PROBLEM,
        410: _PROBLEM,
    },
)
def get_nowcast_result(job: OwnedJobDep, store: StoreDep, state: StateDep) -> Response:
    """The forecast ensemble as CF-1.8 NetCDF once the job is successful."""
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
    data = store.get_result(job.id)
    if data is None:
        raise ProblemError(
            410,
            "result-expired",
            f"the result expired ({state.settings.result_ttl_s} s after the job finished); "
            "submit the job again",
        )
    return Response(
        content=data,
        media_type=NETCDF,
        headers={"Content-Disposition": f'attachment; filename="nowcast-{job.id}.nc"'},
    )


# ---------------------------------------------------------------------------------- cancel


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    summary="Cancel or dismiss a nowcast",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
def cancel_nowcast(request: Request, job: OwnedJobDep, store: StoreDep) -> JSONResponse:
    """Cancel a waiting or running job (it stops at its next sampler step) or drop a result."""
    after = store.cancel(job.id) or job
    logger.info("job=%s cancel requested; status now %s", job.id, after.status.value)
    return JSONResponse(job_body(request, after))
