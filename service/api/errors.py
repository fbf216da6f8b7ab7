"""problem+json (RFC 9457) errors, built in one place.

Every error the API answers, its own and FastAPI's (404 unknown route, 405, 422 validation), is an
`application/problem+json` body with `type`, `title`, `status`, `detail` (what to fix) and `code`
(the short slug that `type` ends with).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.queue.store import StoreFullError, StoreUnavailableError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Raise to answer with a problem+json error.

    Parameters
    ----------
    status : int
        HTTP status code.
    code : str
        Short slug, e.g. "result-not-ready"; becomes the end of `type`.
    detail : str
        What went wrong and what the client should do about it.
    headers : dict, optional
        Extra response headers (e.g. Retry-After, WWW-Authenticate).
    extra : dict, optional
        Extension members added to the body (e.g. validation `errors`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem+json document."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        # last, so that a standard's own `type` URI (an OGC API exception) can replace ours
        **extra,
    }


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder(problem_body(status, code, detail, **extra)),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


_HTTP_CODES = {
    404: ("not-found", "no such resource; see /docs for the API's paths"),
    405: ("method-not-allowed", "this method is not allowed on this path; see /docs"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, default_detail = _HTTP_CODES.get(exc.status_code, ("http-error", ""))
        detail = exc.detail if isinstance(exc.detail, str) else default_detail
        if exc.status_code in _HTTP_CODES and detail in ("Not Found", "Method Not Allowed"):
            detail = default_detail
        return problem_response(
            exc.status_code, code, detail or default_detail, headers=dict(exc.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        return problem_response(422, "invalid-parameters", describe_errors(errors), errors=errors)

    @app.exception_handler(StoreUnavailableError)
    async def _store_unavailable(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        if isinstance(exc, StoreFullError):
            logger.warning("the job store refuses writes: %s", exc)
            return problem_response(
                503,
                "store-full",
                "the job store is full for the moment (results waiting to be fetched or to "
                "expire); retry after 30 s",
                headers={"Retry-After": "30"},
            )
        logger.warning("the job store does not answer: %s", exc)
        return problem_response(
            503,
            "queue-unavailable",
            "the job store does not answer for the moment; retry after a few seconds",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "internal-error",
            "the service failed to handle this request; retry later, and report it if it persists",
        )


def validation_errors(raw: Any) -> list[dict[str, Any]]:
    """pydantic errors -> [{"field": "a.b", "message": ...}] without echoing the input."""
    errors = []
    for error in raw:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        errors.append({"field": ".".join(location) or "-", "message": error.get("msg", "")})
    return errors


def describe_errors(errors: list[dict[str, Any]]) -> str:
    parts = [f"{e['field']}: {e['message']}" for e in errors]
    return "invalid parameters: " + "; ".join(parts)
