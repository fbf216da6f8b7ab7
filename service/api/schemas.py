"""Request and response schemas of the HTTP API (separate classes: internal fields never leak)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.netcdf_io import (
    DEFAULT_PERCENTILES,
    DEFAULT_PRODUCTS,
    DEFAULT_THRESHOLDS_MM_H,
    MAX_RAIN_MM_H,
)
from service.queue.jobs import Job

MAX_MEMBERS = 64
# 2^53 - 1: the largest integer a JavaScript number holds exactly, so a browser reading a job
# back gets the very seed that reproduces it
MAX_SEED = 2**53 - 1

Product = Literal["members", "mean", "exceedance", "percentiles"]


class ConstraintIn(BaseModel):
    """Knowledge-alignment constraint on the forecast."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mean_intensity"] = Field(
        description="`mean_intensity`: steer the forecast's mean rain rate towards a target"
    )
    target_mm_h: float = Field(ge=0, le=MAX_RAIN_MM_H, description="target mean rain rate [mm h-1]")
    strength: float = Field(
        default=1.0, gt=0, le=100, description="guidance strength (1 = the model's default)"
    )


class NowcastParams(BaseModel):
    """Nowcast parameters: in the query (raw body) or as the `params` JSON part (multipart)."""

    model_config = ConfigDict(extra="forbid")

    members: int | None = Field(
        default=None, ge=1, le=MAX_MEMBERS, description="ensemble members (default 10)"
    )
    steps: int | None = Field(
        default=None, ge=1, le=1000, description="sampler steps (default: the model's)"
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="random seed, 0 to 2^53-1; the same seed and input give the same forecast "
        "(default: drawn at submit and reported in the job)",
    )
    constraint: ConstraintIn | None = None
    products: list[Product] = Field(
        default=list(DEFAULT_PRODUCTS), min_length=1, description="products in the output file"
    )
    thresholds_mm_h: list[float] = Field(
        default=list(DEFAULT_THRESHOLDS_MM_H),
        min_length=1,
        max_length=20,
        description="thresholds [mm h-1] of the exceedance probabilities",
    )
    percentiles: list[float] = Field(
        default=list(DEFAULT_PERCENTILES),
        min_length=1,
        max_length=20,
        description="percentiles [%] over members (product `percentiles`)",
    )

    @field_validator("products")
    @classmethod
    def _unique_products(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("thresholds_mm_h")
    @classmethod
    def _thresholds_in_range(cls, value: list[float]) -> list[float]:
        for threshold in value:
            if not 0 <= threshold <= MAX_RAIN_MM_H:
                raise ValueError(f"each threshold must lie in [0, {MAX_RAIN_MM_H}] mm/h")
        return sorted(set(value))

    @field_validator("percentiles")
    @classmethod
    def _percentiles_in_range(cls, value: list[float]) -> list[float]:
        for level in value:
            if not 0 <= level <= 100:
                raise ValueError("each percentile must lie in [0, 100]")
        return sorted(set(value))


class ProblemFieldError(BaseModel):
    field: str = Field(description="the parameter, e.g. `query.members`")
    message: str


class Problem(BaseModel):
    """An error (RFC 9457 problem details, `application/problem+json`); also the OGC API
    exception document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI of the problem type; ends with `code` for this service's")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong and what to do about it")
    code: str = Field(description="short slug of the problem, e.g. `result-not-ready`")
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="every invalid parameter (422 answers)"
    )


class Progress(BaseModel):
    step: int = Field(description="sampler steps done")
    total: int = Field(description="sampler steps in all (0 until the job starts)")
    fraction: float = Field(description="step / total, 0..1")


class ErrorInfo(BaseModel):
    code: str
    detail: str


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class InputInfo(BaseModel):
    frames: int
    height_px: int
    width_px: int


class JobParamsOut(BaseModel):
    members: int
    steps: int
    seed: int
    constraint: ConstraintIn | None
    products: list[str]
    thresholds_mm_h: list[float]
    percentiles: list[float]


class JobOut(BaseModel):
    """Status of one nowcast job (OGC API - Processes status names)."""

    id: str
    status: Literal["accepted", "running", "successful", "failed", "dismissed"]
    progress: Progress
    created: datetime
    started: datetime | None
    finished: datetime | None
    updated: datetime | None
    cancel_requested: bool
    error: ErrorInfo | None
    params: JobParamsOut
    input: InputInfo
    model: str
    result_expires: datetime | None
    links: list[Link]

    @classmethod
    def from_job(cls, job: Job, links: list[Link]) -> JobOut:
        params = job.params
        total = job.progress_total
        return cls(
            id=job.id,
            status=job.status.value,
            progress=Progress(
                step=job.progress_step,
                total=total,
                fraction=round(job.progress_step / total, 4) if total else 0.0,
            ),
            created=_time(job.created_ms),
            started=_time(job.started_ms),
            finished=_time(job.finished_ms),
            updated=_time(job.updated_ms),
            cancel_requested=job.cancel_requested,
            error=ErrorInfo(code=job.error_code, detail=job.error_detail or "")
            if job.error_code
            else None,
            params=JobParamsOut(
                members=params.members,
                steps=params.steps,
                seed=params.seed,
                constraint=ConstraintIn(
                    type="mean_intensity",
                    target_mm_h=params.constraint.target_mm_h,
                    strength=params.constraint.strength,
                )
                if params.constraint
                else None,
                products=list(params.products),
                thresholds_mm_h=list(params.thresholds_mm_h),
                percentiles=list(params.percentiles),
            ),
            input=InputInfo(
                frames=job.input_shape[0],
                height_px=job.input_shape[1],
                width_px=job.input_shape[2],
            ),
            model=job.model,
            result_expires=_time(job.result_expires_ms),
            links=links,
        )


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    offset: int
    limit: int
    links: list[Link]


class GridRules(BaseModel):
    factor_px: int = Field(
        description="the model runs on grids padded to multiples of this (any size is accepted; "
        "the padding is missing coverage)"
    )
    max_px: int = Field(description="largest accepted height or width")


class ModelOut(BaseModel):
    """The loaded model and what it accepts."""

    name: str
    version: str
    weights_sha256: str
    frames_in: int
    frames_out: int
    interval_s: int
    pixel_size_m: float
    grid: GridRules
    constraint_types: list[str]
    default_steps: int
    max_steps: int
    max_members: int
    products: list[str]
    default_thresholds_mm_h: list[float]
    input_variables: list[str]


class ModelList(BaseModel):
    models: list[ModelOut]


class Health(BaseModel):
    status: str
    workers: int | None = None
    queue: str | None = None


def _time(ms: int | None) -> datetime | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
