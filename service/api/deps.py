"""Dependencies of the routes: service state, store, the caller's tenant, the caller's job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.metadata import ModelMetadata
from service.api.auth import ANONYMOUS_TENANT, ApiKeys
from service.api.errors import ProblemError
from service.queue.jobs import Job, is_job_id
from service.queue.store import JobStore
from service.settings import Settings


@dataclass
class ServiceState:
    """Everything a request may need, built once by `create_app`."""

    settings: Settings
    store: JobStore
    model: ModelMetadata
    model_dir: Path
    api_keys: ApiKeys | None  # None = auth off


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_store(state: StateDep) -> JobStore:
    return state.store


StoreDep = Annotated[JobStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer <key>`")


def get_tenant(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant of the caller's API key; 401 without a valid key (when auth is on)."""
    if state.api_keys is None:
        return ANONYMOUS_TENANT
    challenge = {"WWW-Authenticate": 'Bearer realm="nowcast"'}
    if credentials is None or not credentials.credentials:
        raise ProblemError(
            401,
            "missing-api-key",
            "this service needs an API key: send `Authorization: Bearer <key>`",
            headers=challenge,
        )
    tenant = state.api_keys.tenant_for(credentials.credentials)
    if tenant is None:
        raise ProblemError(
            401,
            "invalid-api-key",
            "the API key is not valid; check it for typos or ask the operator for a new one",
            headers=challenge,
        )
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]

# no length or pattern limit here: those would answer 422, and a malformed id must answer the
# 404 of an unknown job (`get_owned_job` checks the form before any store call)
JobIdPath = Annotated[str, PathParam(description="job id (UUID)")]


def get_owned_job(job_id: JobIdPath, tenant: TenantDep, store: StoreDep) -> Job:
    """The job if it exists and belongs to the caller's tenant; otherwise 404 (never 403, so
    other tenants' job ids cannot be probed)."""
    # checked before any store call: a job's other keys extend its id (`<id>:input`), so such an
    # id reached a key of another type (a 500 that also told that the job exists)
    job = store.get(job_id) if is_job_id(job_id) else None
    if job is None or job.tenant != tenant:
        raise ProblemError(
            404,
            "job-not-found",
            f"no nowcast job {job_id!r} for this API key; jobs expire after some days, "
            "list yours with GET /v1/nowcasts",
        )
    return job


OwnedJobDep = Annotated[Job, Depends(get_owned_job)]


def reject_unknown_query(request: Request) -> None:
    """422 naming every query parameter the operation does not take.

    FastAPI ignores unknown query parameters, so a misspelt `membrs=4` silently ran the default
    10 members; the multipart `params` part already refuses unknown names, and so does this.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    # walked per request: a few dependency nodes (APIRoute is unhashable, so no cache by route)
    known = _query_names(route.dependant)
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise ProblemError(
            422,
            "unknown-query-parameters",
            f"unknown query parameter(s): {', '.join(unknown)}; this operation takes: {takes}",
            extra={
                "errors": [
                    {"field": f"query.{name}", "message": "unknown query parameter"}
                    for name in unknown
                ]
            },
        )


def _query_names(dependant: Dependant) -> set[str]:
    """Names of the query parameters a route declares, in its dependencies too."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
