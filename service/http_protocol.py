"""The API's HTTP/1.1 protocol: uvicorn's h11 protocol plus a deadline on the request head.

uvicorn has no timeout on reading a request head. Its keep-alive timer runs only between
requests and is cancelled by every byte that arrives, and nothing is armed on a new connection, so
a client that connects and sends nothing, or sends its head a byte at a time (slowloris), holds a
socket and a protocol object for as long as it likes. ASGI middleware cannot help: the app sees a
request only once its head is whole. This protocol closes a connection whose head is not complete
`header_timeout_s` after the connection opened or after the head's first byte (for later requests
on a keep-alive connection; the idle time before that byte is the keep-alive timeout's). Once the
head is in, the deadline is off: the body has its own limit (`upload_timeout_s`,
`service.api.upload`) and responses (event streams) may last.

h11 rather than httptools (which `uvicorn[standard]` would pick): h11 also enforces
`max_header_bytes` (`h11_max_incomplete_event_size`), and the head state is h11's public API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# sent to a client that had begun a head; one that sent nothing just sees the connection close
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: 36\r\n"
    b"\r\n"
    b"request head not received in time.\r\n"
)


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes connections whose request head arrives too slowly.

    Use `head_deadline_protocol(header_timeout_s)` for a subclass with the timeout set; pass it to
    uvicorn as `http=`.
    """

    header_timeout_s: float = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # a connection that never sends a byte is covered too
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined next request may be buffered, with its head incomplete
        self._follow_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _head_incomplete(self) -> bool:
        """Part of a request head is buffered and h11 waits for the rest."""
        # `their_state` first: `trailing_data` copies the buffer, so only look at it when idle
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def _follow_head(self) -> None:
        if self.conn.their_state is not h11.IDLE:
            # the head is whole (body, response or error follow), or the connection has failed
            self._disarm_head_deadline()
        elif self._head_incomplete():
            # the first bytes of a head: the deadline runs from here (kept if already running)
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        begun = self._head_incomplete()
        if begun:
            self.transport.write(_REQUEST_TIMEOUT)
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        # info, not warning: a slowloris client would otherwise flood the warnings
        self.logger.info(
            "%sclosing a connection whose request head was not complete after %g s (%s)",
            prefix,
            self.header_timeout_s,
            "partial head" if begun else "nothing sent",
        )
        self.transport.close()


def head_deadline_protocol(header_timeout_s: float) -> type[HeadDeadlineH11Protocol]:
    """The protocol class for uvicorn's `http=`, closing heads not whole in `header_timeout_s`."""
    if header_timeout_s <= 0:
        raise ValueError(f"header_timeout_s must be > 0, not {header_timeout_s}")
    return type(
        "HeadDeadlineH11Protocol",
        (HeadDeadlineH11Protocol,),
        {"header_timeout_s": float(header_timeout_s)},
    )
