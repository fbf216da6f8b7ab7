"""Prometheus metrics, read from the job store at scrape time.

Workers record outcomes and histograms into the store (Redis hashes, or the embedded store), so
the API's `/metrics` reports the whole deployment however many worker processes run, and the
figures survive worker restarts. Queue depth, in-flight jobs, dead letters and live workers are
read live at each scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
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

OUTCOMES = ("submitted", "successful", "failed", "dismissed", "dead_lettered")

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

        jobs = CounterMetricFamily("nowcast_jobs", "jobs by outcome", labels=["outcome"])
        counts = snapshot.counters.get(COUNTER_JOBS, {})
        for outcome in OUTCOMES:
            jobs.add_metric([outcome], counts.get(outcome, 0))
        yield jobs

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


def build_registry(store: JobStore, worker_max_age_s: float) -> CollectorRegistry:
    """A registry of its own per app (tests create several apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, worker_max_age_s))
    return registry
