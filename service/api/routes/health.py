"""`/healthz` (liveness), `/readyz` (readiness), `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import StateDep, get_tenant
from service.api.errors import ProblemError
from service.api.schemas import Health
from service.queue.store import StoreFullError, StoreUnavailableError

router = APIRouter(tags=["operations"])

_PROBLEM = {"content": {"application/problem+json": {}}}


@router.get("/healthz", response_model=Health, summary="Liveness")
def get_health() -> Health:
    """The API process is up (says nothing about Redis or workers)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness", responses={503: _PROBLEM})
def get_readiness(state: StateDep) -> Health:
    """Ready when the queue store takes writes and a worker sent a heartbeat recently."""
    store = state.store
    max_age_s = state.settings.worker_heartbeat_max_age_s
    try:
        store.check_writable()
        workers = store.live_worker_count(max_age_s)
    except StoreFullError as exc:
        raise ProblemError(
            503,
            "store-full",
            f"the job store refuses writes (out of memory): {exc}",
            headers={"Retry-After": "30"},
        ) from exc
    except StoreUnavailableError as exc:
        raise ProblemError(
            503,
            "queue-unavailable",
            f"the job store does not answer: {exc}",
            headers={"Retry-After": "5"},
        ) from exc
    if workers == 0:
        raise ProblemError(
            503,
            "no-worker",
            f"no worker sent a heartbeat in the last {max_age_s:g} s; start one with "
            "`nowcast worker` (or `nowcast serve --workers 1`)",
            headers={"Retry-After": "5"},
        )
    return Health(status="ready", workers=workers, queue="ok")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: _PROBLEM},
    # any tenant's key: the figures are deployment-wide, but not for whoever reaches the port
    # (no key needed while auth is off)
    dependencies=[Depends(get_tenant)],
)
def get_metrics(request: Request) -> Response:
    """Jobs by outcome, queue depth, dead letters, queue-wait / run-time / batch-size histograms."""
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
