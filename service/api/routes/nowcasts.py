"""`/v1/nowcasts`: submit, status, events (SSE), result, cancel, list."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import (
    OwnedJobDep,
    ServiceState,
    StateDep,
    StoreDep,
    TenantDep,
    reject_unknown_query,
)
from service.api.errors import ProblemError
from service.api.job_events import JobEventHub
from service.api.schemas import MAX_SEED, JobList, JobOut, Link
from service.api.submission import (
    check_idempotency_key,
    check_queue_room,
    create_job,
    open_result,
)
from service.api.upload import read_submission
from service.queue.constants import JobStatus
from service.queue.jobs import Job

logger = logging.getLogger(__name__)

# unknown query parameters answer 422 (a misspelt `membrs=4` must not silently run defaults)
router = APIRouter(
    prefix="/v1/nowcasts", tags=["nowcasts"], dependencies=[Depends(reject_unknown_query)]
)

NETCDF = "application/x-netcdf"
OCTET_STREAM = "application/octet-stream"
# the forecast file in both media types: generic clients and generators know only octet-stream
NETCDF_CONTENT = {
    media_type: {"schema": {"type": "string", "format": "binary"}}
    for media_type in (NETCDF, OCTET_STREAM)
}
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
    seed: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_SEED, description=f"random seed, 0 to 2^53-1 = {MAX_SEED} (default: drawn)"
        ),
    ] = None,
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
    if strength is not None and target_mm_h is None:
        # a strength alone used to be dropped silently, running an unconstrained forecast
        raise ProblemError(
            422,
            "invalid-parameters",
            "strength: only applies with target_mm_h (or inside a `constraint` JSON); add "
            "target_mm_h or drop strength",
            extra={"errors": [{"field": "query.strength", "message": "needs target_mm_h"}]},
        )
    return params


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
        429: _PROBLEM,
        503: _PROBLEM,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                **NETCDF_CONTENT,
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
    check_idempotency_key(idempotency_key)
    await check_queue_room(state)
    data, body_params = await read_submission(request)
    submitted = await create_job(state, tenant, data, {**query, **body_params}, idempotency_key)
    job = submitted.job
    headers = {
        "Location": str(request.url_for("get_nowcast", job_id=job.id)),
        "Retry-After": str(state.settings.retry_after_s),
    }
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
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
        _job_events(request, state, job),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _job_events(request: Request, state: ServiceState, first: Job) -> AsyncIterator[str]:
    # the process's one poller reads the job (`JobEventHub`): no store call per stream
    hub: JobEventHub = request.app.state.job_events
    last_seen: tuple[Any, ...] | None = None
    last_sent = time.monotonic()
    event_id = 0
    async with hub.subscribe(first) as subscription:
        while True:
            job = await subscription.next(timeout_s=_SSE_KEEPALIVE_S)
            if job is None:
                return
            seen = (job.status, job.progress_step, job.progress_total, job.cancel_requested)
            if seen != last_seen:
                event_id += 1
                body = json.dumps(job_body(request, job))
                yield f"id: {event_id}\nevent: status\ndata: {body}\n\n"
                last_seen, last_sent = seen, time.monotonic()
            elif time.monotonic() - last_sent > _SSE_KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if job.status.is_terminal or await request.is_disconnected():
                return


@router.get(
    "/{job_id}/result",
    summary="Forecast of a nowcast (CF-NetCDF)",
    response_class=Response,
    responses={
        200: {"content": NETCDF_CONTENT, "description": "the forecast file"},
        401: _PROBLEM,
        404: _PROBLEM,
        410: _PROBLEM,
    },
)
def get_nowcast_result(request: Request, job: OwnedJobDep, state: StateDep) -> Response:
    """The forecast ensemble as CF-1.8 NetCDF once the job is successful."""
    return netcdf_response(request, open_result(job, state), job.id)


def netcdf_response(request: Request, data: bytes | Iterator[bytes], job_id: str) -> Response:
    """The forecast file, as `application/x-netcdf` unless the client accepts only
    `application/octet-stream`; streamed when `data` is an iterator of chunks."""
    accept = request.headers.get("accept", "")
    media_type = OCTET_STREAM if OCTET_STREAM in accept and "netcdf" not in accept else NETCDF
    headers = {"Content-Disposition": f'attachment; filename="nowcast-{job_id}.nc"'}
    if isinstance(data, bytes):
        return Response(content=data, media_type=media_type, headers=headers)
    return StreamingResponse(data, media_type=media_type, headers=headers)


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
