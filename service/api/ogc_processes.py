"""OGC API - Processes on top of the nowcast jobs: the mapping, not a second job system.

One process, `nowcast`. Executing it makes the same `Job` as `POST /v1/nowcasts` (through
`service.api.submission`), and `/jobs` shows the same jobs as `/v1/nowcasts`, so a job is
visible, pollable and cancellable from both faces. This module translates:
- an execute request's `inputs` -> (radar bytes, `NowcastParams` fields);
- a `Job` -> `statusInfo` (progress as a percentage of sampler steps);
- the model's metadata -> the process description (inputs with JSON Schemas, one output).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, get_args

from models.metadata import ModelMetadata
from service.api.errors import ProblemError
from service.api.ogc_schemas import (
    InputDescription,
    OgcLink,
    OutputDescription,
    Process,
    ProcessSummary,
    StatusInfo,
)
from service.api.schemas import MAX_MEMBERS, MAX_SEED, Product
from service.netcdf_io import (
    DEFAULT_PERCENTILES,
    DEFAULT_PRODUCTS,
    DEFAULT_THRESHOLDS_MM_H,
    MAX_RAIN_MM_H,
)
from service.queue.constants import JobStatus
from service.queue.jobs import Job

PROCESS_ID = "nowcast"
NETCDF = "application/x-netcdf"
# media types a `radar` input may declare; the same as the raw upload of /v1/nowcasts
RADAR_MEDIA_TYPES = ("application/x-netcdf", "application/netcdf", "application/octet-stream")

_CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
# the conformance classes implemented; not `oas30`: the service's OpenAPI document is 3.1
CONFORMANCE = [
    f"{_CONF}{name}" for name in ("core", "ogc-process-description", "json", "job-list", "dismiss")
]
_EXCEPTION = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
NO_SUCH_PROCESS = f"{_EXCEPTION}no-such-process"
NO_SUCH_JOB = f"{_EXCEPTION}no-such-job"
RESULT_NOT_READY = f"{_EXCEPTION}result-not-ready"

REL_RESULTS = "http://www.opengis.net/def/rel/ogc/1.0/results"
REL_EXECUTE = "http://www.opengis.net/def/rel/ogc/1.0/execute"
REL_JOB_LIST = "http://www.opengis.net/def/rel/ogc/1.0/job-list"
REL_PROCESSES = "http://www.opengis.net/def/rel/ogc/1.0/processes"
REL_CONFORMANCE = "http://www.opengis.net/def/rel/ogc/1.0/conformance"
REL_PROCESS_DESCRIPTION = "http://www.opengis.net/def/rel/ogc/1.0/process-desc"

_SCALAR_INPUTS = ("members", "steps", "seed", "products", "thresholds_mm_h", "percentiles")


def process_summary(model: ModelMetadata, links: list[OgcLink]) -> ProcessSummary:
    interval_s = model.config.interval_s
    return ProcessSummary(
        id=PROCESS_ID,
        version=f"{model.name}-{model.version}",
        title="Ensemble precipitation nowcast (PreDiff)",
        description=(
            f"{model.frames_out} forecast frames of rain rate at {interval_s} s from the last "
            f"{model.frames_in} radar frames, as an ensemble by latent diffusion (PreDiff), with "
            "optional knowledge alignment towards a target mean rain rate. Execution is "
            "asynchronous only: with or without `Prefer: respond-async` the answer is 201, a "
            "`Location` of the job and its status document."
        ),
        keywords=["nowcasting", "precipitation", "radar", "ensemble", "diffusion"],
        jobControlOptions=["async-execute", "dismiss"],
        outputTransmission=["value"],
        links=links,
    )


def process_description(model: ModelMetadata, links: list[OgcLink]) -> Process:
    """The `nowcast` process: its inputs (JSON Schemas with the model's limits) and output."""
    diffusion = model.config.diffusion
    interval_s = model.config.interval_s
    optional = {"minOccurs": 0}
    inputs = {
        "radar": InputDescription(
            title="Radar sequence (CF-NetCDF)",
            description=(
                "rain rate (standard_name lwe_precipitation_rate, mm h-1) or reflectivity (dBZ) "
                f"over (time, y, x); at least {model.frames_in} frames at {interval_s} s. "
                'Send {"value": "<base64 of the file>", "mediaType": "application/x-netcdf", '
                '"encoding": "base64"}; references (`href`) are not fetched.'
            ),
            schema={"type": "string", "contentEncoding": "base64", "contentMediaType": NETCDF},
        ),
        "members": InputDescription(
            title="Ensemble members",
            description="number of forecast members",
            schema={"type": "integer", "minimum": 1, "maximum": MAX_MEMBERS, "default": 10},
            **optional,
        ),
        "steps": InputDescription(
            title="Sampler steps",
            description="diffusion sampler steps (more: slower, sometimes sharper)",
            schema={
                "type": "integer",
                "minimum": 1,
                "maximum": diffusion.num_train_steps,
                "default": diffusion.sampling_steps,
            },
            **optional,
        ),
        "seed": InputDescription(
            title="Random seed",
            description="the same seed and input give the same forecast; drawn when absent",
            schema={"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            **optional,
        ),
        "target_mm_h": InputDescription(
            title="Target mean rain rate [mm h-1]",
            description="steer the ensemble's mean rain rate towards this (knowledge alignment)",
            schema={"type": "number", "minimum": 0, "maximum": MAX_RAIN_MM_H},
            **optional,
        ),
        "strength": InputDescription(
            title="Guidance strength",
            description="multiplies the model's guidance strength; only with target_mm_h",
            schema={"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 1},
            **optional,
        ),
        "products": InputDescription(
            title="Products",
            description="what the forecast file holds",
            schema={
                "type": "array",
                "items": {
                    "type": "string",
                    "enum": list(get_args(Product)),
                },
                "default": list(DEFAULT_PRODUCTS),
            },
            **optional,
        ),
        "thresholds_mm_h": InputDescription(
            title="Exceedance thresholds [mm h-1]",
            description="thresholds of the exceedance probabilities",
            schema={
                "type": "array",
                "items": {"type": "number", "minimum": 0, "maximum": MAX_RAIN_MM_H},
                "default": list(DEFAULT_THRESHOLDS_MM_H),
            },
            **optional,
        ),
        "percentiles": InputDescription(
            title="Percentiles [%]",
            description="percentiles over members (product `percentiles`)",
            schema={
                "type": "array",
                "items": {"type": "number", "minimum": 0, "maximum": 100},
                "default": list(DEFAULT_PERCENTILES),
            },
            **optional,
        ),
    }
    outputs = {
        "forecast": OutputDescription(
            title="Forecast ensemble (CF-1.8 NetCDF)",
            description="members, mean, exceedance probabilities and percentiles as requested",
            schema={"type": "string", "contentEncoding": "binary", "contentMediaType": NETCDF},
        )
    }
    summary = process_summary(model, links)
    return Process(**summary.model_dump(), inputs=inputs, outputs=outputs)


def _plain(value: Any) -> Any:
    """A qualified value `{"value": v, ...}` -> v; a plain value stays as it is."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def _radar_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        if "href" in value:
            raise ProblemError(
                400,
                "reference-input-not-supported",
                "the radar input is a reference (`href`); this service fetches no URLs, send the "
                'file inline: {"value": "<base64>", "mediaType": "application/x-netcdf", '
                '"encoding": "base64"}',
            )
        media_type = value.get("mediaType")
        if media_type is not None and media_type not in RADAR_MEDIA_TYPES:
            raise ProblemError(
                415,
                "unsupported-media-type",
                f"the radar input's mediaType is {media_type!r}; send the file as "
                "application/x-netcdf",
            )
        encoding = value.get("encoding", "base64")
        if encoding != "base64":
            raise ProblemError(
                400,
                "bad-input-encoding",
                f"the radar input's encoding is {encoding!r}; only base64 can travel in JSON",
            )
    value = _plain(value)
    if not isinstance(value, str):
        raise ProblemError(
            400, "bad-radar-input", "the radar input must be the NetCDF file as a base64 string"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProblemError(
            400, "bad-radar-input", f"the radar input is not valid base64 ({exc})"
        ) from exc


def inputs_to_submission(
    inputs: dict[str, Any], outputs: dict[str, Any] | None
) -> tuple[bytes, dict[str, Any]]:
    """An execute request's inputs -> (radar NetCDF bytes, raw `NowcastParams` fields)."""
    known = {"radar", "target_mm_h", "strength", *_SCALAR_INPUTS}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise ProblemError(
            400,
            "unknown-inputs",
            f"the nowcast process has no input(s) {', '.join(unknown)}; its inputs are "
            f"{', '.join(sorted(known))}",
        )
    unknown_outputs = sorted(set(outputs or {}) - {"forecast"})
    if unknown_outputs:
        raise ProblemError(
            400,
            "unknown-outputs",
            f"the nowcast process has no output(s) {', '.join(unknown_outputs)}; its one output "
            "is `forecast`",
        )
    if "radar" not in inputs:
        raise ProblemError(
            400,
            "missing-radar-input",
            'the execute request has no `radar` input; send {"inputs": {"radar": {"value": '
            '"<base64 of the NetCDF file>", "mediaType": "application/x-netcdf"}}}',
        )
    data = _radar_bytes(inputs["radar"])
    params: dict[str, Any] = {
        name: _plain(inputs[name]) for name in _SCALAR_INPUTS if name in inputs
    }
    target, strength = _plain(inputs.get("target_mm_h")), _plain(inputs.get("strength"))
    if target is not None:
        params["constraint"] = {"type": "mean_intensity", "target_mm_h": target}
        if strength is not None:
            params["constraint"]["strength"] = strength
    elif strength is not None:
        raise ProblemError(
            422,
            "invalid-parameters",
            "strength: only applies with target_mm_h; add target_mm_h or drop strength",
        )
    return data, params


def progress_percent(job: Job) -> int:
    """Sampler steps done as 0-100 (100 once successful)."""
    if job.status is JobStatus.SUCCESSFUL:
        return 100
    if not job.progress_total:
        return 0
    return min(100, int(100 * job.progress_step / job.progress_total))


def status_info(job: Job, url_for: Callable[..., str]) -> StatusInfo:
    """A job as the standard's status document; `url_for(name, **params)` builds links."""
    links = [
        OgcLink(
            href=url_for("get_job", job_id=job.id),
            rel="self",
            type="application/json",
            title="job status",
        ),
        OgcLink(
            href=url_for("describe_process", process_id=PROCESS_ID),
            rel=REL_PROCESS_DESCRIPTION,
            type="application/json",
            title="the nowcast process",
        ),
    ]
    if job.status is JobStatus.SUCCESSFUL:
        links.append(
            OgcLink(
                href=url_for("get_job_results", job_id=job.id),
                rel=REL_RESULTS,
                type=NETCDF,
                title="forecast ensemble (CF-NetCDF)",
            )
        )
    message = None
    if job.error_code:
        message = f"{job.error_code}: {job.error_detail or ''}".rstrip(": ")
    elif job.status is JobStatus.RUNNING:
        message = f"sampler step {job.progress_step} of {job.progress_total}"
    return StatusInfo(
        processID=PROCESS_ID,
        jobID=job.id,
        status=job.status.value,
        message=message,
        created=_time(job.created_ms),
        started=_time(job.started_ms),
        finished=_time(job.finished_ms),
        updated=_time(job.updated_ms),
        progress=progress_percent(job),
        links=links,
    )


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None
