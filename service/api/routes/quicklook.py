"""`GET /v1/nowcasts/{id}/quicklook.png`: a frame strip of a finished forecast, drawn on request."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import OwnedJobDep, StateDep, reject_unknown_query
from service.api.errors import ProblemError
from service.queue.constants import JobStatus
from service.quicklook import QuicklookError, quicklook_png

router = APIRouter(
    prefix="/v1/nowcasts", tags=["nowcasts"], dependencies=[Depends(reject_unknown_query)]
)

PNG = "image/png"
_PROBLEM = {"content": {"application/problem+json": {}}}


@router.get(
    "/{job_id}/quicklook.png",
    summary="Quick-look image of a nowcast (PNG)",
    response_class=Response,
    responses={
        200: {"content": {PNG: {"schema": {"type": "string", "format": "binary"}}}},
        401: _PROBLEM,
        404: _PROBLEM,
        410: _PROBLEM,
        422: _PROBLEM,
    },
)
async def get_nowcast_quicklook(
    job: OwnedJobDep,
    state: StateDep,
    product: Annotated[
        Literal["mean", "member", "probability"],
        Query(description="ensemble mean, one member, or an exceedance probability"),
    ] = "mean",
    member: Annotated[int, Query(ge=0, description="member index for product=member")] = 0,
    threshold_mm_h: Annotated[
        float | None,
        Query(gt=0, description="threshold [mm h-1] for product=probability (default ~1)"),
    ] = None,
) -> Response:
    """The product's frames over the forecast lead times with a colour bar, as one PNG."""
    if job.status is not JobStatus.SUCCESSFUL:
        raise ProblemError(
            404,
            "result-not-ready" if not job.status.is_terminal else "no-result",
            f"the job is {job.status.value}; a quick-look exists once it is successful",
            headers={"Retry-After": str(state.settings.retry_after_s)}
            if not job.status.is_terminal
            else None,
        )
    data = await run_in_threadpool(state.store.get_result, job.id)
    if data is None:
        raise ProblemError(
            410,
            "result-expired",
            f"the result expired ({state.settings.result_ttl_s} s after the job finished); "
            "submit the job again",
        )
    try:
        png = await run_in_threadpool(
            quicklook_png, data, product, member=member, threshold_mm_h=threshold_mm_h
        )
    except QuicklookError as exc:
        raise ProblemError(exc.status, exc.code, exc.detail) from exc
    # a result never changes, but it belongs to one tenant: private caches only
    return Response(png, media_type=PNG, headers={"Cache-Control": "private, max-age=3600"})
