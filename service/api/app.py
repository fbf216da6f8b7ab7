"""The app factory: settings -> store, model metadata, auth -> FastAPI app with every router.

`create_app` builds everything eagerly, so a bad keys file or model folder fails at start, not at
the first request. With `embedded_workers > 0` the app also runs that many worker threads in its
own process on the same store (the embedded default of `nowcast serve` without Redis).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.metadata import read_model_metadata
from service.api.auth import ApiKeys
from service.api.body_limit import BodySizeLimitMiddleware
from service.api.deps import ServiceState
from service.api.errors import install_problem_handlers
from service.api.job_events import JobEventHub
from service.api.openapi import install_openapi, operation_id
from service.api.request_metrics import RequestMetricsMiddleware
from service.api.routes import health, models, nowcasts, ogc, quicklook
from service.api.routes.dashboard import install_dashboard
from service.api.routes.docs import install_docs
from service.metrics import build_registry
from service.model_source import resolve_model_dir
from service.queue.store import JobStore, create_store
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Ensemble precipitation nowcasts from radar, by PreDiff (latent diffusion with knowledge
alignment). Post a radar sequence as CF-NetCDF, follow the job, fetch the forecast as CF-NetCDF.
Errors are `application/problem+json`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    store: JobStore | None = None,
    embedded_workers: int = 0,
) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to the environment (`NOWCAST_*`).
    store : JobStore, optional
        Defaults to Redis when `settings.redis_url` is set, else a new in-process store.
    embedded_workers : int
        Worker threads to run inside this process on `store` (0 = none).
    """
    settings = settings or get_settings()
    store = store or create_store(settings)
    model_dir = resolve_model_dir(settings)
    model = read_model_metadata(model_dir)
    api_keys = ApiKeys.from_file(settings.api_keys_file) if settings.api_keys_file else None
    state = ServiceState(
        settings=settings, store=store, model=model, model_dir=model_dir, api_keys=api_keys
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _log_startup(state, embedded_workers)
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if embedded_workers:
            from service.worker import start_worker_threads

            threads = start_worker_threads(settings, store, model_dir, embedded_workers, stop)
        try:
            yield
        finally:
            await job_events.close()
            stop.set()
            for thread in threads:
                thread.join(timeout=settings.worker_drain_s + 5)
            store.close()

    app = FastAPI(
        title="PreDiff nowcasting service",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # self-hosted by install_docs: FastAPI's own pages load their assets from a CDN
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.service = state
    # one poller per process for every open event stream
    job_events = JobEventHub(store, settings.sse_poll_interval_s)
    app.state.job_events = job_events
    metrics = build_registry(
        store,
        settings.worker_heartbeat_max_age_s,
        model_name=model.name,
        model_version=model.version,
    )
    app.state.metrics_registry = metrics.registry
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.upload_timeout_s,
        max_concurrent_uploads=settings.max_concurrent_uploads,
    )
    # added last, so outermost: it also times requests the body limit refuses
    app.add_middleware(RequestMetricsMiddleware, histogram=metrics.http_request_duration)
    app.include_router(nowcasts.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(quicklook.router)
    app.include_router(ogc.router)
    install_docs(app)
    install_dashboard(app)
    install_openapi(app, auth_on=api_keys is not None)
    return app


def _log_startup(state: ServiceState, embedded_workers: int) -> None:
    settings = state.settings
    if state.api_keys is None:
        logger.warning(
            "AUTH IS OFF: NOWCAST_API_KEYS_FILE is unset, so anyone who can reach this port can "
            "submit and read jobs. Set it to a YAML/JSON file of `key: tenant` for production."
        )
    else:
        logger.info("auth on: %d API keys", len(state.api_keys))
    queue = "redis" if settings.redis_url else "embedded in-process"
    logger.info(
        "model %s %s from %s; queue %s; %d embedded worker(s)",
        state.model.name,
        state.model.version,
        state.model_dir,
        queue,
        embedded_workers,
    )
    if not settings.redis_url and embedded_workers == 0:
        logger.warning("embedded queue with no worker threads: submitted jobs will never run")
