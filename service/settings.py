"""Service settings from the environment (prefix `NOWCAST_`), one class for API, worker and CLI.

Every field can be set as `NOWCAST_<FIELD_NAME>` (e.g. `NOWCAST_REDIS_URL`). Units sit in the
names: `_s` seconds, `_bytes` bytes, `_mm_h` millimetres per hour. The README's settings table
lists the same fields.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.metadata import DEFAULT_MODEL_DIR

# the trained default inside the installed package (or the source tree with `pip install -e`)
SHIPPED_MODEL_DIR = DEFAULT_MODEL_DIR


class Settings(BaseSettings):
    """All knobs of the nowcasting service; read once per process with `get_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="NOWCAST_",
        extra="ignore",
        protected_namespaces=(),
    )

    # --- queue and storage -------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis URL, e.g. redis://localhost:6379/0; unset = embedded in-process queue",
    )
    redis_key_prefix: str = Field(
        default="nowcast",
        description="prefix of every Redis key and stream (several deployments can share a Redis)",
    )
    blob_url: str = Field(
        default="~/.cache/nowcast/blobs",
        description="where the Redis queue keeps inputs and results: a folder shared by the API "
        "and the workers (path or file://), or an fsspec URL such as s3://bucket/prefix",
    )

    # --- auth ----------------------------------------------------------------------------------
    api_keys_file: Path | None = Field(
        default=None,
        description="YAML or JSON mapping API key -> tenant; unset = auth off (logged loudly)",
    )

    # --- model ---------------------------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None,
        description=(
            "model folder (model.yaml + weights); unset = the shipped models/weights/small-v3, "
            "or a seeded random model of `fallback_model_config` when that folder is missing"
        ),
    )
    fallback_model_config: str = Field(
        default="tiny",
        description="config preset of the random model used when no trained model is found",
    )
    model_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "nowcast",
        description="where the random fallback model is written",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="torch device of the workers; auto = cuda when available"
    )
    denoiser_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="compute dtype of the denoiser; auto = bfloat16 where the device has it "
        "natively (AVX512-BF16 / AMX CPUs, recent GPUs), float32 elsewhere",
    )
    worker_threads: int | None = Field(
        default=None,
        gt=0,
        description="compute threads of each worker, for torch and ONNX Runtime alike; unset = "
        "the cores this process may use (affinity, cgroup quota) divided by the workers sharing "
        "them (`serve --workers N`), so that the workers' threads add up to the cores",
    )
    zr_a: float = Field(default=200.0, description="Z-R relation Z = a R^b for dBZ input: a")
    zr_b: float = Field(default=1.6, description="Z-R relation Z = a R^b for dBZ input: b")

    # --- HTTP ----------------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1", description="bind address (0.0.0.0 only inside containers)"
    )
    port: int = Field(default=8000, ge=0, le=65535, description="bind port")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="largest accepted request body (413 above)"
    )
    max_result_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        description="largest forecast file a job may make (estimated at submit; 422 above)",
    )
    worker_memory_bytes: int = Field(
        default=6 * 1024 * 1024 * 1024,
        gt=0,
        description="worker memory a job may need (estimated at submit, service.admission; 422 "
        "above); keep it below the workers' memory limit",
    )
    upload_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a request body must arrive whole within this (408 after): a stalled or "
        "trickling upload holds no memory or upload slot for longer",
    )
    max_concurrent_uploads: int = Field(
        default=8,
        gt=0,
        description="request bodies read at once per API process; more answer 503 + Retry-After",
    )
    keep_alive_timeout_s: float = Field(
        default=15.0, gt=0, description="an idle keep-alive connection is closed after this"
    )
    header_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="a request head (request line + headers) must arrive whole within this "
        "after the connection opens or the head begins; the connection closes after (slowloris)",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="largest request head (request line + headers); the connection closes above",
    )
    max_queue_length: int = Field(
        default=100, gt=0, description="jobs waiting or running before submit answers 503"
    )
    max_jobs_per_tenant: int | None = Field(
        default=None,
        gt=0,
        description="jobs one tenant may have waiting or running before its submits answer 429; "
        "unset = half of max_queue_length, so no one tenant can fill the queue",
    )
    retry_after_s: int = Field(
        default=5,
        gt=0,
        description="Retry-After of 202 and result-not-ready answers; queue-full 503s say 6x this",
    )
    sse_poll_interval_s: float = Field(
        default=0.25, gt=0, description="how often an event stream checks the job for changes"
    )
    default_members: int = Field(
        default=10, ge=1, le=64, description="ensemble members when the request names none"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    # --- lifetimes -----------------------------------------------------------------------------
    result_ttl_s: int = Field(default=24 * 3600, gt=0, description="forecast kept this long")
    input_ttl_s: int = Field(
        default=6 * 3600, gt=0, description="uploaded radar kept this long (waiting jobs expire)"
    )
    job_ttl_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="job record kept this long (past result expiry, so result can answer 410)",
    )
    idempotency_ttl_s: int = Field(default=24 * 3600, gt=0, description="Idempotency-Key memory")

    # --- worker --------------------------------------------------------------------------------
    lease_s: float = Field(
        default=60.0, gt=0, description="a job idle this long in a worker is reclaimed by another"
    )
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="how often a worker renews its lease and heartbeat"
    )
    max_deliveries: int = Field(
        default=3, ge=1, description="deliveries before a job goes to the dead-letter stream"
    )
    worker_batch_size: int = Field(
        default=4, ge=1, description="jobs pulled at once; those of the same shape run as a batch"
    )
    worker_heartbeat_max_age_s: float = Field(
        default=30.0, gt=0, description="/readyz needs a worker heartbeat younger than this"
    )
    progress_interval_s: float = Field(
        default=0.5, gt=0, description="progress written at most this often"
    )
    worker_drain_s: float = Field(
        default=20.0,
        ge=0,
        description="on SIGTERM, finish the jobs in hand if done within this, else release them",
    )
    dead_consumer_idle_s: float = Field(
        default=600.0,
        gt=0,
        description="a queue consumer idle this long with no job pending and no heartbeat is "
        "removed from the consumer group by the live workers (a dead worker's name)",
    )
    worker_poll_s: float = Field(
        default=1.0, gt=0, description="how long a worker blocks waiting for new jobs"
    )

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.lease_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"lease_s ({self.lease_s}) must be at least twice heartbeat_interval_s "
                f"({self.heartbeat_interval_s}), or live workers lose their jobs"
            )
        if self.dead_consumer_idle_s <= self.lease_s:
            raise ValueError(
                f"dead_consumer_idle_s ({self.dead_consumer_idle_s}) must exceed lease_s "
                f"({self.lease_s}), or a slow live worker's consumer could be removed"
            )
        return self

    def resolved_model_dir(self) -> Path | None:
        """The configured or shipped model folder, or None when neither exists."""
        if self.model_dir is not None:
            return self.model_dir
        if (SHIPPED_MODEL_DIR / "model.yaml").is_file():
            return SHIPPED_MODEL_DIR
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
