"""Request-size limit enforced while the body streams in (413), as a pure ASGI middleware.

A declared `Content-Length` above the limit is refused before any byte is read. Otherwise the
bytes are counted as they arrive, and the request is cut off the moment the count passes the limit,
so an oversized (or chunked, undeclared) body is never held in memory whole.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import PROBLEM_JSON, problem_body


class BodyTooLargeError(Exception):
    """Raised from `receive` when the body passes the limit; turned into a 413 here."""


class BodySizeLimitMiddleware:
    """Answer 413 problem+json once a request body exceeds `max_body_bytes`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._send_413(send, declared)
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                return  # whatever the app made of the aborted body, the answer is 413
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await self._send_413(send, None)

    async def _send_413(self, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "more bytes"
        detail = (
            f"the request body ({size}) exceeds the limit of {self.max_body_bytes} bytes; "
            "send fewer frames or a smaller grid (only the model's input frames are used), "
            "or compress the NetCDF (zlib)"
        )
        body = json.dumps(problem_body(413, "body-too-large", detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
