"""Documents of OGC API - Processes - Part 1: Core 1.0 (OGC 18-062r2), as pydantic models.

Names and fields follow the standard's schemas (landingPage, confClasses, processList, process,
statusInfo, jobList, execute). They are dumped with `ogc_document`: by alias (`schema`) and
without null members, because the standard's schemas have no nulls (a missing `started` is
absent, not null).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OGC_STATUS = Literal["accepted", "running", "successful", "failed", "dismissed"]


class OgcLink(BaseModel):
    href: str
    rel: str | None = None
    type: str | None = None
    title: str | None = None


class LandingPage(BaseModel):
    title: str
    description: str
    links: list[OgcLink]


class ConfClasses(BaseModel):
    conformsTo: list[str]  # noqa: N815 - the standard's name


class InputDescription(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    title: str
    description: str
    # `schema` is the standard's member name; `schema_` only because pydantic's BaseModel
    # already has a `schema` method
    schema_: dict[str, Any] = Field(alias="schema")
    minOccurs: int = 1  # noqa: N815
    maxOccurs: int = 1  # noqa: N815


class OutputDescription(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class ProcessSummary(BaseModel):
    id: str
    version: str
    title: str
    description: str
    keywords: list[str] = []
    jobControlOptions: list[Literal["sync-execute", "async-execute", "dismiss"]]  # noqa: N815
    outputTransmission: list[Literal["value", "reference"]]  # noqa: N815
    links: list[OgcLink]


class Process(ProcessSummary):
    inputs: dict[str, InputDescription]
    outputs: dict[str, OutputDescription]


class ProcessList(BaseModel):
    processes: list[ProcessSummary]
    links: list[OgcLink]


class StatusInfo(BaseModel):
    """The status of a job (`statusInfo`)."""

    processID: str | None = None  # noqa: N815
    type: Literal["process"] = "process"
    jobID: str  # noqa: N815
    status: OGC_STATUS
    message: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    updated: datetime | None = None
    progress: int | None = Field(default=None, ge=0, le=100)
    links: list[OgcLink] = []


class OgcJobList(BaseModel):
    jobs: list[StatusInfo]
    links: list[OgcLink]


class ExecuteRequest(BaseModel):
    """An execute request (`execute`): input values by input id, the outputs wanted."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(
        description='input id -> value: a plain value, or `{"value": ...}`; the `radar` file as '
        '`{"value": "<base64>", "mediaType": "application/x-netcdf", "encoding": "base64"}`'
    )
    outputs: dict[str, Any] | None = Field(
        default=None, description="output id -> options; only `forecast` exists"
    )
    response: Literal["document", "raw"] = Field(
        default="document", description="of no effect: results are always the NetCDF file"
    )
    subscriber: dict[str, Any] | None = Field(
        default=None, description="not supported: a request naming one is refused"
    )


def ogc_document(model: BaseModel) -> dict[str, Any]:
    """`model` as the standard's JSON: by alias, nulls left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
