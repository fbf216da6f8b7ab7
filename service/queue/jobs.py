"""The job record and its wire format: pure `serialize_job` / `deserialize_job` (JSON, not pickle).

A job is stored as a flat hash of strings (a Redis hash; a dict in the embedded store). Scalars are
written as text, compound fields (`params`, `input_shape`) as JSON, absent values as "".
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.queue.constants import JobStatus


def now_ms() -> int:
    """Wall-clock time [ms since the Unix epoch]."""
    return int(time.time() * 1000)


def new_job_id() -> str:
    """A fresh job id: a UUID4 (122 random bits), so ids cannot be guessed."""
    return str(uuid.uuid4())


def is_job_id(text: str) -> bool:
    """True when `text` has the form of a job id: a UUID as `new_job_id` writes it (lowercase,
    hyphenated). Anything else names no job, whatever is stored under it."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


@dataclass(frozen=True)
class Constraint:
    """Knowledge-alignment constraint: the forecast's mean rain rate should approach a target."""

    type: str
    target_mm_h: float
    strength: float = 1.0


@dataclass(frozen=True)
class JobParams:
    """What the client asked for, validated and completed (steps, seed) by the API.

    `thresholds_mm_h` [mm h-1] are those of the exceedance probabilities, `percentiles` [%] those
    of the percentile product; `products` names the output variables (see `service.netcdf_io`).
    """

    members: int
    steps: int
    seed: int
    constraint: Constraint | None
    products: tuple[str, ...]
    thresholds_mm_h: tuple[float, ...]
    percentiles: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("products", "thresholds_mm_h", "percentiles"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobParams:
        constraint = data.get("constraint")
        return cls(
            members=int(data["members"]),
            steps=int(data["steps"]),
            seed=int(data["seed"]),
            constraint=Constraint(**constraint) if constraint else None,
            products=tuple(str(p) for p in data["products"]),
            thresholds_mm_h=tuple(float(t) for t in data["thresholds_mm_h"]),
            percentiles=tuple(float(p) for p in data["percentiles"]),
        )


@dataclass(frozen=True)
class Job:
    """One nowcast job.

    Times are [ms since the Unix epoch]; `input_shape` is (T, H, W) [frames, px, px].
    """

    id: str
    tenant: str
    params: JobParams
    input_shape: tuple[int, int, int]
    input_sha256: str
    status: JobStatus = JobStatus.ACCEPTED
    created_ms: int = field(default_factory=now_ms)
    updated_ms: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    progress_step: int = 0
    progress_total: int = 0
    error_code: str | None = None
    error_detail: str | None = None
    deliveries: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    result_expires_ms: int | None = None
    message_id: str | None = None
    model: str = ""

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)


_INT_FIELDS = ("created_ms", "updated_ms", "progress_step", "progress_total", "deliveries")
_OPTIONAL_INT_FIELDS = ("started_ms", "finished_ms", "result_expires_ms")
_OPTIONAL_STR_FIELDS = ("error_code", "error_detail", "worker", "message_id")


def serialize_job(job: Job) -> dict[str, str]:
    """Job -> flat mapping of strings (one Redis hash)."""
    data: dict[str, str] = {
        "id": job.id,
        "tenant": job.tenant,
        "status": job.status.value,
        "params": json.dumps(job.params.to_dict(), sort_keys=True),
        "input_shape": json.dumps(list(job.input_shape)),
        "input_sha256": job.input_sha256,
        "cancel_requested": "1" if job.cancel_requested else "0",
        "model": job.model,
    }
    for name in _INT_FIELDS:
        data[name] = str(getattr(job, name))
    for name in _OPTIONAL_INT_FIELDS + _OPTIONAL_STR_FIELDS:
        value = getattr(job, name)
        data[name] = "" if value is None else str(value)
    return data


def deserialize_job(data: Mapping[str | bytes, str | bytes]) -> Job:
    """Flat mapping of strings (or bytes, as redis-py returns them) -> Job."""
    text = {_text(k): _text(v) for k, v in data.items()}
    shape = json.loads(text["input_shape"])
    return Job(
        id=text["id"],
        tenant=text["tenant"],
        status=JobStatus(text["status"]),
        params=JobParams.from_dict(json.loads(text["params"])),
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        input_sha256=text.get("input_sha256", ""),
        cancel_requested=text.get("cancel_requested") == "1",
        model=text.get("model", ""),
        **{name: int(text.get(name) or 0) for name in _INT_FIELDS},
        **{name: int(text[name]) if text.get(name) else None for name in _OPTIONAL_INT_FIELDS},
        **{name: text.get(name) or None for name in _OPTIONAL_STR_FIELDS},
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
