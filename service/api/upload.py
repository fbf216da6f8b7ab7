"""Read a submission: the radar NetCDF and the parameters, as a raw body or as multipart.

- raw: `Content-Type: application/x-netcdf` (or `application/netcdf`,
  `application/octet-stream`), the file as the body, parameters in the query string;
- multipart: `multipart/form-data` with a `radar` file part and an optional `params` part holding
  the parameters as JSON (they override query parameters of the same name).

The body is read in the chunks it arrives in; `BodySizeLimitMiddleware` cuts it off past the
limit, so nothing here holds more than `max_body_bytes`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from service.api.errors import ProblemError

NETCDF_MEDIA_TYPES = ("application/x-netcdf", "application/netcdf", "application/octet-stream")
MULTIPART = "multipart/form-data"


async def read_submission(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The uploaded file's bytes and the parameters found in the body (multipart `params`)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media_type in NETCDF_MEDIA_TYPES:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
            return bytes(body), {}
        if media_type == MULTIPART:
            return await _read_multipart(request)
    except ClientDisconnect:
        # a client hanging up mid-upload is the network, not a server error: no 500, no traceback
        raise ProblemError(
            400,
            "upload-incomplete",
            "the connection closed before the whole body arrived; send the file again",
        ) from None
    raise ProblemError(
        415,
        "unsupported-media-type",
        f"cannot take a {media_type or 'missing'} Content-Type; send the radar file as "
        "`application/x-netcdf` (parameters in the query) or as `multipart/form-data` with a "
        "`radar` file part and a `params` JSON part",
    )


async def _read_multipart(request: Request) -> tuple[bytes, dict[str, Any]]:
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
    except MultiPartException as exc:
        raise ProblemError(
            400, "bad-multipart", f"the multipart body cannot be parsed: {exc.message}"
        ) from exc
    try:
        radar = form.get("radar")
        if not isinstance(radar, UploadFile):
            raise ProblemError(
                400,
                "missing-radar-part",
                "the multipart body has no `radar` file part; attach the NetCDF file as "
                "`radar` (e.g. curl -F radar=@radar.nc)",
            )
        data = await radar.read()
        params = form.get("params")
        if isinstance(params, UploadFile):
            params = (await params.read()).decode("utf-8", errors="replace")
    finally:
        await form.close()
    if params is None or params == "":
        return data, {}
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        raise ProblemError(
            400,
            "bad-params-json",
            f"the `params` part is not valid JSON ({exc.msg} at character {exc.pos}); send an "
            'object such as {"members": 10, "seed": 1}',
        ) from exc
    if not isinstance(parsed, dict):
        raise ProblemError(
            400, "bad-params-json", "the `params` part must be a JSON object of parameters"
        )
    return data, parsed
