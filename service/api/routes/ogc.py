"""OGC API - Processes - Part 1: Core under `/ogc`: the nowcast jobs through the OGC standard.

A thin router over `service.api.submission` (the same jobs as `/v1/nowcasts`) and
`service.api.ogc_processes` (the mapping). Landing page, conformance and process descriptions
are public like `/v1/models`; execution and jobs need the same API key, and show only the
caller's tenant's jobs, as `/v1/nowcasts` does. Errors are problem+json, which is the standard's
exception document (`type`, `title`, `status`, `detail`), with the standard's `type` URIs where
it names one (no-such-process, no-such-job, result-not-ready).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.deps import StateDep, StoreDep, TenantDep, get_owned_job, reject_unknown_query
from service.api.errors import ProblemError
from service.api.ogc_processes import (
    CONFORMANCE,
    NO_SUCH_JOB,
    NO_SUCH_PROCESS,
    PROCESS_ID,
    REL_CONFORMANCE,
    REL_EXECUTE,
    REL_JOB_LIST,
    REL_PROCESSES,
    RESULT_NOT_READY,
    inputs_to_submission,
    process_description,
    process_summary,
    status_info,
)
from service.api.ogc_schemas import (
    ConfClasses,
    ExecuteRequest,
    LandingPage,
    OgcJobList,
    OgcLink,
    Process,
    ProcessList,
    StatusInfo,
    ogc_document,
)
from service.api.routes.nowcasts import NETCDF_CONTENT, netcdf_response
from service.api.submission import check_idempotency_key, check_queue_room, create_job, open_result
from service.queue.constants import JobStatus
from service.queue.jobs import Job
from service.queue.store import JobStore

logger = logging.getLogger(__name__)

_PROBLEM = {"content": {"application/problem+json": {}}}
JSON = "application/json"

router = APIRouter(
    prefix="/ogc",
    tags=["OGC API - Processes"],
    dependencies=[Depends(reject_unknown_query)],
    responses={422: _PROBLEM},
)

ProcessIdPath = Annotated[str, PathParam(description="process id; the one process is `nowcast`")]
JobIdPath = Annotated[str, PathParam(description="job id (UUID)")]
# the scan behind filtered job lists stops here; no tenant keeps more jobs than this
_MAX_SCANNED_JOBS = 10_000


def _url_for(request: Request) -> Callable[..., str]:
    """`url_for` of this request as absolute URL strings, for the mapping module's links."""
    return lambda name, **params: str(request.url_for(name, **params))


def _json(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ogc_document(model), status_code=status_code, headers=headers)


def _check_process(process_id: str) -> None:
    if process_id != PROCESS_ID:
        raise ProblemError(
            404,
            "no-such-process",
            f"there is no process {process_id!r}; the one process is {PROCESS_ID!r} "
            "(list them at /ogc/processes)",
            extra={"type": NO_SUCH_PROCESS},
        )


def owned_job(job_id: JobIdPath, tenant: TenantDep, store: StoreDep) -> Job:
    """The caller's job, or the standard's no-such-job 404 (for another tenant's job too)."""
    try:
        return get_owned_job(job_id, tenant, store)
    except ProblemError:
        raise ProblemError(
            404,
            "no-such-job",
            f"no job {job_id!r} for this API key; jobs expire after some days, list yours at "
            "/ogc/jobs",
            extra={"type": NO_SUCH_JOB},
        ) from None


OgcJobDep = Annotated[Job, Depends(owned_job)]


# ------------------------------------------------------------------------------ discovery


@router.get("/", response_model=LandingPage, summary="OGC API landing page")
def get_landing_page(request: Request) -> JSONResponse:
    """Links to the API description, the conformance classes, the processes and the jobs."""
    app = request.app
    base = str(request.base_url).rstrip("/")
    links = [
        OgcLink(href=str(request.url_for("get_landing_page")), rel="self", type=JSON),
        OgcLink(
            href=f"{base}{app.openapi_url}",
            rel="service-desc",
            type="application/vnd.oai.openapi+json;version=3.1",
            title="OpenAPI document",
        ),
        OgcLink(
            href=str(request.url_for("get_conformance")),
            rel=REL_CONFORMANCE,
            type=JSON,
            title="conformance classes",
        ),
        OgcLink(
            href=str(request.url_for("list_processes")),
            rel=REL_PROCESSES,
            type=JSON,
            title="processes",
        ),
        OgcLink(href=str(request.url_for("list_jobs")), rel=REL_JOB_LIST, type=JSON, title="jobs"),
    ]
    # /docs is served by a router of its own (self-hosted assets), not by FastAPI's docs_url
    if any(getattr(route, "path", None) == "/docs" for route in app.routes):
        links.insert(
            2,
            OgcLink(
                href=f"{base}/docs", rel="service-doc", type="text/html", title="API documentation"
            ),
        )
    return _json(
        LandingPage(
            title="PreDiff nowcasting service (OGC API - Processes)",
            description="Ensemble precipitation nowcasts from radar as an OGC API - Processes "
            "process; the same jobs as /v1/nowcasts.",
            links=links,
        )
    )


@router.get("/conformance", response_model=ConfClasses, summary="Conformance classes")
def get_conformance() -> JSONResponse:
    """The OGC API - Processes conformance classes this service implements."""
    return _json(ConfClasses(conformsTo=CONFORMANCE))


def _process_links(request: Request) -> list[OgcLink]:
    return [
        OgcLink(
            href=str(request.url_for("describe_process", process_id=PROCESS_ID)),
            rel="self",
            type=JSON,
            title="process description",
        ),
        OgcLink(
            href=str(request.url_for("execute_process", process_id=PROCESS_ID)),
            rel=REL_EXECUTE,
            type=JSON,
            title="execute (POST, asynchronous)",
        ),
        OgcLink(href=str(request.url_for("list_jobs")), rel=REL_JOB_LIST, type=JSON, title="jobs"),
    ]


@router.get("/processes", response_model=ProcessList, summary="Processes")
def list_processes(request: Request, state: StateDep) -> JSONResponse:
    """The one process, `nowcast`."""
    summary = process_summary(state.model, _process_links(request))
    self_link = OgcLink(href=str(request.url_for("list_processes")), rel="self", type=JSON)
    return _json(ProcessList(processes=[summary], links=[self_link]))


@router.get(
    "/processes/{process_id}",
    response_model=Process,
    summary="Process description",
    responses={404: _PROBLEM},
)
def describe_process(request: Request, state: StateDep, process_id: ProcessIdPath) -> JSONResponse:
    """The process's inputs (with their JSON Schemas and the model's limits) and its output."""
    _check_process(process_id)
    return _json(process_description(state.model, _process_links(request)))


# ------------------------------------------------------------------------------ execution


@router.post(
    "/processes/{process_id}/execution",
    status_code=201,
    response_model=StatusInfo,
    summary="Execute the nowcast process (asynchronous)",
    responses={
        400: _PROBLEM,
        401: _PROBLEM,
        404: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        429: _PROBLEM,
        503: _PROBLEM,
    },
)
async def execute_process(
    request: Request,
    state: StateDep,
    tenant: TenantDep,
    process_id: ProcessIdPath,
    execute: Annotated[ExecuteRequest, Body()],
    prefer: Annotated[
        str | None,
        Header(description="`respond-async`; execution is asynchronous with or without it"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(description="the same key and payload return the same job (24 h)"),
    ] = None,
) -> JSONResponse:
    """Start a nowcast job; answers 201, `Location: .../jobs/{jobId}` and its status.

    The process runs asynchronously only (`jobControlOptions: async-execute`), so, as the
    standard prescribes for such a process, a request without `Prefer: respond-async` (or with
    `respond-sync`) is executed asynchronously as well; `Preference-Applied` says when the
    preference was honoured.
    """
    _check_process(process_id)
    if execute.subscriber is not None:
        raise ProblemError(
            400,
            "subscriber-not-supported",
            "this service sends no callbacks; drop `subscriber` and poll the job's status",
        )
    check_idempotency_key(idempotency_key)
    await check_queue_room(state)
    data, raw_params = inputs_to_submission(execute.inputs, execute.outputs)
    submitted = await create_job(state, tenant, data, raw_params, idempotency_key)
    job = submitted.job
    headers = {
        "Location": str(request.url_for("get_job", job_id=job.id)),
        "Retry-After": str(state.settings.retry_after_s),
    }
    if prefer and "respond-async" in prefer:
        headers["Preference-Applied"] = "respond-async"
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    return _json(status_info(job, _url_for(request)), status_code=201, headers=headers)


# ------------------------------------------------------------------------------ jobs


@router.get("/jobs", response_model=OgcJobList, summary="Jobs", responses={401: _PROBLEM})
def list_jobs(
    request: Request,
    tenant: TenantDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="jobs to skip (newest first)")
    ] = 0,
    status: Annotated[
        list[JobStatus] | None, Query(description="only jobs in these states")
    ] = None,
    process_id: Annotated[
        list[str] | None, Query(alias="processID", description="only jobs of these processes")
    ] = None,
    type: Annotated[  # noqa: A002 - the standard's parameter name
        list[str] | None, Query(description="only jobs of these types (`process`)")
    ] = None,
) -> JSONResponse:
    """The caller's jobs (submitted here or at /v1/nowcasts), newest first, paged."""
    if (process_id is not None and PROCESS_ID not in process_id) or (
        type is not None and "process" not in type
    ):
        jobs: list[Job] = []
        total = 0
    elif status:
        jobs, total = _filtered_jobs(store, tenant, set(status), offset, limit)
    else:
        jobs, total = store.list_jobs(tenant, offset, limit)
    links = [OgcLink(href=str(request.url), rel="self", type=JSON)]
    if offset + limit < total:
        next_url = request.url.include_query_params(offset=offset + limit)
        links.append(OgcLink(href=str(next_url), rel="next", type=JSON))
    if offset > 0:
        prev_url = request.url.include_query_params(offset=max(0, offset - limit))
        links.append(OgcLink(href=str(prev_url), rel="prev", type=JSON))
    url_for = _url_for(request)
    return _json(OgcJobList(jobs=[status_info(job, url_for) for job in jobs], links=links))


def _filtered_jobs(
    store: JobStore, tenant: str, statuses: set[JobStatus], offset: int, limit: int
) -> tuple[list[Job], int]:
    """The tenant's jobs in `statuses`, paged after filtering (the store pages unfiltered)."""
    matched: list[Job] = []
    page = 100
    for start in range(0, _MAX_SCANNED_JOBS, page):
        jobs, total = store.list_jobs(tenant, start, page)
        matched.extend(job for job in jobs if job.status in statuses)
        if start + page >= total:
            break
    return matched[offset : offset + limit], len(matched)


@router.get(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Job status",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
def get_job(request: Request, job: OgcJobDep) -> JSONResponse:
    """The job's status document: state, progress 0-100, times, links (results once done)."""
    return _json(status_info(job, _url_for(request)))


@router.delete(
    "/jobs/{job_id}",
    response_model=StatusInfo,
    summary="Dismiss a job",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
def dismiss_job(request: Request, job: OgcJobDep, store: StoreDep) -> JSONResponse:
    """Cancel a waiting or running job (it stops at its next sampler step) or drop its result."""
    after = store.cancel(job.id) or job
    logger.info("job=%s dismissed (OGC); status now %s", job.id, after.status.value)
    return _json(status_info(after, _url_for(request)))


@router.get(
    "/jobs/{job_id}/results",
    summary="Job results: the forecast NetCDF",
    response_class=Response,
    responses={
        200: {"content": NETCDF_CONTENT, "description": "the forecast file"},
        401: _PROBLEM,
        404: _PROBLEM,
        410: _PROBLEM,
    },
)
def get_job_results(request: Request, job: OgcJobDep, state: StateDep) -> Response:
    """The one output, `forecast`, as CF-1.8 NetCDF once the job is successful."""
    try:
        data = open_result(job, state)
    except ProblemError as exc:
        if exc.code == "result-not-ready":
            exc.extra["type"] = RESULT_NOT_READY
        raise
    return netcdf_response(request, data, job.id)
