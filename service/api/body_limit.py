"""Request bodies bounded in size, time and number, as a pure ASGI middleware.

- size (413): a declared `Content-Length` above the limit is refused before any byte is read.
  Otherwise the bytes are counted as they arrive, and the request is cut off the moment the count
  passes the limit, so an oversized (or chunked, undeclared) body is never held in memory whole;
- time (408): the whole body must arrive within `body_timeout_s` of the first read, so a stalled
  or trickling client (one byte now and then) does not hold its buffer and slot indefinitely;
- number (503 + Retry-After): at most `max_concurrent_uploads` bodies are read at once per
  process; one more is refused at once rather than queued (queued uploads hold sockets and memory
  too). A semaphore, not a queue: the client retries after Retry-After.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import PROBLEM_JSON, problem_body


class BodyTooLargeError(Exception):
    """Raised from `receive` when the body passes the limit; turned into a 413 here."""


class BodyTimeoutError(Exception):
    """Raised from `receive` when the body did not arrive in time; turned into a 408 here."""


class BodySizeLimitMiddleware:
    """Answer 413 problem+json once a request body exceeds `max_body_bytes`, 408 when it takes
    longer than `body_timeout_s`, 503 when `max_concurrent_uploads` bodies are being read."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout_s: float | None = None,
        max_concurrent_uploads: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_concurrent_uploads = max_concurrent_uploads
        self._uploads = 0  # bodies being read now (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.max_concurrent_uploads is not None and self._uploads >= self.max_concurrent_uploads:
            await self._send_503(send)
            return
        self._uploads += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self._uploads -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._send_413(send, declared)
            return

        received = 0
        exceeded = False
        timed_out = False
        response_started = False
        deadline: float | None = None
        loop = asyncio.get_running_loop()

        async def limited_receive() -> Message:
            nonlocal received, exceeded, timed_out, deadline
            if self.body_timeout_s is None:
                message = await receive()
            else:
                if deadline is None:
                    deadline = loop.time() + self.body_timeout_s
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    timed_out = True
                    raise BodyTimeoutError from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if (exceeded or timed_out) and not response_started:
                return  # whatever the app made of the aborted body, the answer is 413 / 408
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except (BodyTooLargeError, BodyTimeoutError):
            pass
        except Exception:
            if not (exceeded or timed_out):
                raise
        if exceeded and not response_started:
            await self._send_413(send, None)
        elif timed_out and not response_started:
            detail = (
                f"the request body did not arrive within {self.body_timeout_s:g} s; send it "
                "again over a faster connection, or send a smaller file"
            )
            await _send_problem(send, 408, "upload-timeout", detail)

    async def _send_503(self, send: Send) -> None:
        detail = (
            f"this server is reading its limit of {self.max_concurrent_uploads} uploads at "
            "once (max_concurrent_uploads); retry after 5 s"
        )
        await _send_problem(send, 503, "too-many-uploads", detail, retry_after_s=5)

    async def _send_413(self, send: Send, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "more bytes"
        detail = (
            f"the request body ({size}) exceeds the limit of {self.max_body_bytes} bytes; "
            "send fewer frames or a smaller grid (only the model's input frames are used), "
            "or compress the NetCDF (zlib)"
        )
        await _send_problem(send, 413, "body-too-large", detail)


async def _send_problem(
    send: Send, status: int, code: str, detail: str, retry_after_s: int | None = None
) -> None:
    """A problem+json answer that closes the connection (the unread body is still on it)."""
    body = json.dumps(problem_body(status, code, detail)).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _has_body(scope: Scope) -> bool:
    """A request that sends a body: a non-zero Content-Length, or chunked."""
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    declared = _content_length(scope)
    return declared is not None and declared != 0


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
