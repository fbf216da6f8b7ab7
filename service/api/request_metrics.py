"""HTTP request durations for Prometheus, labelled by route template (not raw path).

A pure ASGI middleware rather than Starlette's `BaseHTTPMiddleware`: it sees the status of the
response start and times until the last body chunk is sent, without buffering streamed bodies
(server-sent events, result downloads). The route label is the template the router matched
(`/v1/nowcasts/{job_id}`), read from `scope["route"]` after the app ran, so job ids never become
label values; a request that matched no route is labelled `unmatched`, bounding the label set to
the routes the app has.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "unmatched"


class RequestMetricsMiddleware:
    """Observe each HTTP request's duration [s] into `histogram{method, route, status}`."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # the app raised before starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.histogram.labels(scope["method"], route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The path template of the route that handled `scope`, or `UNMATCHED_ROUTE`."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE
