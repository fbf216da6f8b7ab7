"""The OpenAPI document as a client generator needs it.

FastAPI's own document has three things a generated client trips over, and FastAPI has no switch
for any of them, so `install_openapi` post-processes it once:
- every error response gets the `Problem` schema under `application/problem+json` (FastAPI can
  attach a model only under the route's own media type, `application/json`);
- its built-in 422 `HTTPValidationError` is replaced by that `Problem`, which is what the
  service really answers (service/api/errors.py);
- the bearer security scheme stays only when API keys are configured: with auth off a generated
  client must not need a token.
Operation ids are the handlers' names (`submit_nowcast`, `get_job`), see `operation_id`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from service.api.errors import PROBLEM_JSON
from service.api.schemas import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def operation_id(route: APIRoute) -> str:
    """The handler's name: short, stable ids for generated clients (FastAPI's default appends
    the path and method, e.g. `submit_nowcast_v1_nowcasts_post`)."""
    return route.name


def install_openapi(app: FastAPI, *, auth_on: bool) -> None:
    """Serve the post-processed document at the app's `/openapi.json` (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                servers=app.servers,
            )
            app.openapi_schema = for_generated_clients(spec, auth_on=auth_on)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def for_generated_clients(spec: dict[str, Any], *, auth_on: bool) -> dict[str, Any]:
    """`spec` with problem+json errors, the real 422 and auth as configured (see module doc)."""
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                if status[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                    if status == "422":
                        response["description"] = "Invalid or unknown parameters"
            if not auth_on:
                operation.pop("security", None)
                operation["responses"].pop("401", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if not auth_on:
        components.pop("securitySchemes", None)
    return spec
