"""Prometheus metrics: the deployment's jobs (read from the job store at scrape time), the API
process's HTTP requests, the process itself and what it runs.

Workers record outcomes and histograms into the store (Redis hashes, or the embedded store), so
the API's `/metrics` reports the whole deployment however many worker processes run, and the
figures survive worker restarts. Queue depth, in-flight jobs, dead letters and live workers are
read live at each scrape. Submissions (`nowcast_jobs_submitted_total`) and outcomes
(`nowcast_jobs_finished_total{outcome}`) are separate counters, so summing the outcomes counts
each finished job once.

Per API process (each replica has its own): `nowcast_http_request_duration_seconds{method,route,
status}` (route = the route template, see `service.api.request_metrics`), prometheus_client's
process and platform collectors (`process_*`, `python_info`), and `nowcast_build_info` (value 1,
labels: service version, model name and version from the model folder's `model.yaml`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.queue.constants import (
    COUNTER_JOBS,
    HIST_BATCH_SIZE,
    HIST_QUEUE_WAIT_S,
    HIST_RUN_S,
    HISTOGRAM_BUCKETS,
)
from service.queue.store import JobStore

logger = logging.getLogger(__name__)

# the store counts submissions under this label of its jobs counter, next to the outcomes
SUBMITTED = "submitted"
OUTCOMES = ("successful", "failed", "dismissed", "dead_lettered")
DISTRIBUTION = "prediff-nowcast"
# request durations [s]: from health checks (ms) to large uploads and result downloads
HTTP_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_HISTOGRAMS = {
    HIST_QUEUE_WAIT_S: ("nowcast_queue_wait_seconds", "time from submit to a worker starting it"),
    HIST_RUN_S: ("nowcast_run_seconds", "time a worker spent on a job, start to result"),
    HIST_BATCH_SIZE: ("nowcast_batch_size", "jobs run together in one forecast batch"),
}


class StoreCollector(Collector):
    """Collects the deployment's job metrics from a `JobStore`."""

    def __init__(self, store: JobStore, worker_max_age_s: float) -> None:
        self.store = store
        self.worker_max_age_s = worker_max_age_s

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("nowcast_store_up", "1 when the job store answered this scrape")
        try:
            snapshot = self.store.metrics_snapshot(self.worker_max_age_s)
        except Exception as exc:  # a Redis outage must not break the whole scrape
            logger.warning("metrics: job store error: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        counts = snapshot.counters.get(COUNTER_JOBS, {})
        submitted = CounterMetricFamily(
            "nowcast_jobs_submitted", "jobs accepted (an idempotent replay is not counted)"
        )
        submitted.add_metric([], counts.get(SUBMITTED, 0))
        yield submitted
        finished = CounterMetricFamily(
            "nowcast_jobs_finished",
            "jobs that reached a final state, by outcome",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            finished.add_metric([outcome], counts.get(outcome, 0))
        yield finished

        gauges = (
            (
                "nowcast_queue_depth",
                "jobs accepted or running (what the limit counts)",
                snapshot.active_jobs,
            ),
            (
                "nowcast_jobs_in_flight",
                "jobs delivered to a worker and not yet acknowledged",
                snapshot.in_flight,
            ),
            ("nowcast_dead_letters", "entries in the dead-letter stream", snapshot.dead_letters),
            ("nowcast_workers_alive", "workers with a recent heartbeat", snapshot.live_workers),
        )
        for name, help_, value in gauges:
            gauge = GaugeMetricFamily(name, help_)
            gauge.add_metric([], value)
            yield gauge

        for key, (name, help_) in _HISTOGRAMS.items():
            histogram = snapshot.histograms.get(key)
            buckets, cumulative = [], 0
            for bound in HISTOGRAM_BUCKETS[key]:
                cumulative += histogram.buckets.get(repr(float(bound)), 0) if histogram else 0
                buckets.append((repr(float(bound)), cumulative))
            total = histogram.count if histogram else 0
            buckets.append(("+Inf", total))
            family = HistogramMetricFamily(name, help_)
            family.add_metric([], buckets, sum_value=histogram.sum if histogram else 0.0)
            yield family


@dataclass(frozen=True)
class ApiMetrics:
    """One app's registry and the series its request middleware records into."""

    registry: CollectorRegistry
    http_request_duration: Histogram


def build_registry(
    store: JobStore, worker_max_age_s: float, *, model_name: str, model_version: str
) -> ApiMetrics:
    """A registry of its own per app (tests create several apps in one process): the store's
    job metrics, HTTP request durations, process/platform metrics and the build info."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, worker_max_age_s))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge(
        "nowcast_build_info",
        "always 1; labels: service version and the model this deployment serves",
        ["version", "model_name", "model_version"],
        registry=registry,
    )
    info.labels(_service_version(), model_name, model_version).set(1)
    duration = Histogram(
        "nowcast_http_request_duration_seconds",
        "HTTP requests to the API by method, route template and status, until the response ends",
        ["method", "route", "status"],
        buckets=HTTP_DURATION_BUCKETS_S,
        registry=registry,
    )
    return ApiMetrics(registry, duration)


def _service_version() -> str:
    try:
        return importlib_metadata.version(DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"
