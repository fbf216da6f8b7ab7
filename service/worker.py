"""The worker: `nowcast worker` (one process) and the embedded worker threads of `nowcast serve`.

A worker loads the model once (VAE encoder as an ONNX Runtime session, denoiser and the
guidance's network in torch on CUDA when available), warms it up, then loops: claim up to
`worker_batch_size` jobs, run those with the same grid and steps as one `forecast_batch`, write
each forecast as CF-NetCDF and store it. Jobs run in the worker's own process (no fork: CUDA
does not survive it).

While jobs are in hand a heartbeat thread renews their leases and the worker's heartbeat; the
sampler callback writes progress (at most every `progress_interval_s`) and checks cancellation
flags after every step. A job whose lease could not be renewed (another worker reclaimed it after
the lease ran out) is dropped at the next step: this worker neither stores its result nor settles
it. A worker started before its store answers waits for it (capped exponential backoff).

On SIGTERM the worker takes no new work and finishes the jobs in hand if that takes less than
`worker_drain_s`; otherwise, or on a second SIGTERM, it releases them back to the queue.
Outcomes go through `handle_success` / `handle_failure` / `handle_dismissed`.

This module imports torch only inside `Worker.load`, so the API process can import it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.log import configure_logging
from service.netcdf_io import RadarInput, RadarInputError, read_radar_netcdf, write_forecast_netcdf
from service.queue.constants import HIST_BATCH_SIZE, HIST_QUEUE_WAIT_S, HIST_RUN_S
from service.queue.jobs import Job
from service.queue.store import Delivery, JobStore, StoreUnavailableError, create_store
from service.settings import Settings, get_settings
from service.threads import apply_torch_threads, threads_per_worker

logger = logging.getLogger(__name__)

# waits between tries to reach the job store at start [s]: doubling from the first to the cap
STORE_RETRY_FIRST_S = 0.5
STORE_RETRY_MAX_S = 15.0


class _Cancelled(Exception):
    """Raised from the sampler callback: these jobs were cancelled."""

    def __init__(self, job_ids: set[str]) -> None:
        super().__init__(f"cancelled: {sorted(job_ids)}")
        self.job_ids = job_ids


class _Released(Exception):
    """Raised from the sampler callback: shutting down, give the jobs back."""


class _Lost(Exception):
    """Raised from the sampler callback: another worker took these jobs over (our lease ran
    out); they are its jobs now."""

    def __init__(self, job_ids: set[str]) -> None:
        super().__init__(f"lost: {sorted(job_ids)}")
        self.job_ids = job_ids


@dataclass
class _Task:
    delivery: Delivery
    job: Job
    radar: RadarInput


def new_consumer_id() -> str:
    """`<host>-<pid>-<random>`: unique per worker, and it names the process for operators."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker:
    """One consumer of the job queue.

    Parameters
    ----------
    settings : Settings
        Batch size, lease, progress interval, drain time, device, Z-R relation.
    store : JobStore
        Where jobs come from and results go.
    model_dir : Path
        The model folder to load (`service.model_source.resolve_model_dir`).
    consumer : str, optional
        Consumer name in the queue (default: `new_consumer_id()`).
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        model_dir: Path,
        consumer: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        # compute threads for torch and ONNX Runtime (service.threads: the workers' sum = cores)
        self.threads = threads or settings.worker_threads or threads_per_worker(1)
        self.store = store
        self.model_dir = Path(model_dir)
        self.consumer = consumer or new_consumer_id()
        self.pipeline: Any = None  # models.pipeline.NowcastPipeline once loaded (torch is lazy)
        self.metadata: Any = None  # models.metadata.ModelMetadata of the loaded model
        self._stop: threading.Event | None = None  # set by `run`
        self._in_hand: list[Delivery] = []
        self._in_hand_lock = threading.Lock()
        self._lost: set[str] = set()  # message ids of deliveries another consumer took over
        self._stop_seen_at: float | None = None
        self._release_now = threading.Event()
        self._beat_stop = threading.Event()

    # ------------------------------------------------------------------ set-up
    def load(self) -> None:
        """Load the model once and run one tiny forecast so the first job pays no warm-up."""
        from models.metadata import read_model_metadata
        from models.pipeline import ForecastRequest, NowcastPipeline

        device = resolve_device(self.settings.device)
        started = time.monotonic()
        apply_torch_threads(self.threads)
        self.pipeline = NowcastPipeline.from_model_dir(
            self.model_dir,
            device=device,
            encoder_backend="onnx",
            denoiser_precision=self.settings.denoiser_precision,
            codec_threads=self.threads,
        )
        self.metadata = self.pipeline.metadata or read_model_metadata(self.model_dir)
        config = self.pipeline.config
        side = config.grid_factor
        self.pipeline.forecast_batch(
            [
                ForecastRequest(
                    np.zeros((config.frames_in, side, side), np.float32), 1, steps=1, seed=0
                )
            ]
        )
        logger.info(
            "worker %s ready in %.1f s: model %s %s from %s; torch device %s (denoiser %s); "
            "encoder %s; decoder %s; %d compute threads",
            self.consumer,
            time.monotonic() - started,
            self.metadata.name,
            self.metadata.version,
            self.model_dir,
            device,
            self.pipeline.denoiser_precision,
            self.pipeline.encoder_backend,
            self.pipeline.decoder_backend,
            self.threads,
        )

    # ------------------------------------------------------------------ main loop
    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs until `stop` is set; then drain (see module docstring)."""
        if self.pipeline is None:
            self.load()
        self._stop = stop
        if not self.wait_for_store(stop):
            logger.info("worker %s stopped before the job store answered", self.consumer)
            return
        beat = threading.Thread(
            target=self._heartbeat_loop,
            name=f"heartbeat-{self.consumer}",
            daemon=True,
        )
        self.store.heartbeat(self.consumer)
        beat.start()
        try:
            while not stop.is_set():
                try:
                    deliveries = self.store.claim(
                        self.consumer, self.settings.worker_batch_size, self.settings.worker_poll_s
                    )
                except Exception:
                    logger.exception("worker %s: cannot claim jobs; retrying", self.consumer)
                    stop.wait(2.0)
                    continue
                if deliveries and not stop.is_set():
                    try:
                        self.process(deliveries)
                    except Exception:
                        # e.g. Redis went away mid-job: the unacknowledged jobs come back to
                        # a worker once their lease runs out
                        logger.exception("worker %s: processing a claim failed", self.consumer)
                elif deliveries:  # stopped between claim and start: hand them straight back
                    for delivery in deliveries:
                        self.store.release(delivery)
        finally:
            stop.set()
            self._beat_stop.set()
            beat.join(timeout=5)
            try:
                self.store.remove_worker(self.consumer)
            except StoreUnavailableError as exc:  # its heartbeat simply ages out
                logger.warning("worker %s: cannot remove its heartbeat: %s", self.consumer, exc)
            logger.info("worker %s stopped", self.consumer)

    def wait_for_store(self, stop: threading.Event) -> bool:
        """Wait until the job store answers, retrying with capped exponential backoff, so that a
        worker started before Redis (or while it restarts) comes up instead of exiting.

        Returns False when `stop` was set first.
        """
        delay_s = STORE_RETRY_FIRST_S
        tries = 0
        while not stop.is_set():
            try:
                self.store.ping()
            except StoreUnavailableError as exc:
                tries += 1
                logger.warning(
                    "worker %s: the job store does not answer (%s); retry %d in %.1f s",
                    self.consumer,
                    exc,
                    tries,
                    delay_s,
                )
                stop.wait(delay_s)
                delay_s = min(2 * delay_s, STORE_RETRY_MAX_S)
                continue
            if tries:
                logger.info(
                    "worker %s: the job store answers after %d retries", self.consumer, tries
                )
            return True
        return False

    def release_now(self) -> None:
        """Give the jobs in hand back at the next sampler step (second SIGTERM)."""
        self._release_now.set()

    def _heartbeat_loop(self) -> None:
        # runs until `run` returns (not merely until stop), so that the leases of the jobs in
        # hand stay ours while they drain
        last_prune = time.monotonic()
        while not self._beat_stop.wait(self.settings.heartbeat_interval_s):
            try:
                self.store.heartbeat(self.consumer)
                self.renew_leases()
            except Exception as exc:
                logger.warning("worker %s: heartbeat failed: %s", self.consumer, exc)
            # every live worker tidies the consumer group and the blob store now and then (no
            # operator job needed; both are idempotent, so several workers doing it is harmless)
            if time.monotonic() - last_prune >= self.settings.dead_consumer_idle_s / 4:
                last_prune = time.monotonic()
                self.prune_dead_consumers()
                self.sweep_blobs()

    def sweep_blobs(self) -> None:
        """Delete inputs and results past their TTL from the blob store."""
        try:
            removed = self.store.sweep_blobs()
        except Exception as exc:
            logger.warning("worker %s: sweeping expired blobs failed: %s", self.consumer, exc)
            return
        if removed:
            logger.info("deleted %d expired input/result blob(s)", removed)

    def prune_dead_consumers(self) -> None:
        """Remove dead workers' names from the queue's consumer group (idle, nothing pending)."""
        try:
            removed = self.store.prune_consumers(self.settings.dead_consumer_idle_s)
        except Exception as exc:
            logger.warning("worker %s: pruning dead consumers failed: %s", self.consumer, exc)
            return
        if removed:
            logger.info("removed %d dead consumer(s): %s", len(removed), ", ".join(removed))

    def renew_leases(self) -> None:
        """Renew the leases of the jobs in hand; remember those that another worker took over
        (the sampler callback then drops them)."""
        with self._in_hand_lock:
            in_hand = list(self._in_hand)
        lost = self.store.renew_leases(self.consumer, in_hand)
        with self._in_hand_lock:
            # one settled meanwhile by this worker was acknowledged, not lost
            lost = [d for d in lost if d in self._in_hand]
            self._lost.update(d.message_id for d in lost)
        for delivery in lost:
            logger.warning(
                "job=%s: lease lost (not renewed within %g s) and taken over by another worker; "
                "dropping it here",
                delivery.job_id,
                self.store.policy.lease_s,
            )

    def is_lost(self, delivery: Delivery) -> bool:
        with self._in_hand_lock:
            return delivery.message_id in self._lost

    def _settled(self, delivery: Delivery) -> None:
        """The store acknowledged `delivery`: no lease to renew any more."""
        with self._in_hand_lock:
            if delivery in self._in_hand:
                self._in_hand.remove(delivery)

    def _release(self, delivery: Delivery) -> None:
        self.store.release(delivery)
        self._settled(delivery)

    # ------------------------------------------------------------------ one claim
    def process(self, deliveries: list[Delivery]) -> None:
        """Start the claimed jobs, read their inputs, run them grouped by grid and steps.

        A redelivered job (its worker died holding it) may be what killed that worker, so it
        runs alone, before the next claimed job is started (`claim` hands reclaimed jobs first):
        a poison job then takes no batch-mates down with it, nor uses up their deliveries.

        A job is started (marked `running`, `started_ms` set) only when its group is about to
        run: jobs waiting behind another grid's batch stay `accepted` until then, so their
        status and queue-wait figures tell the truth.
        """
        with self._in_hand_lock:
            self._in_hand = list(deliveries)
        try:
            for claimed in self._claimed_groups(deliveries):
                if self.draining_too_long():
                    for delivery in claimed:  # never started: queued again as they are
                        self._release(delivery)
                    continue
                tasks = []
                for delivery in claimed:
                    task = self._start(delivery)
                    if task is not None and task.job.deliveries > 1:
                        self._run_group([task])
                    elif task is not None:
                        tasks.append(task)
                groups: dict[tuple[Any, ...], list[_Task]] = defaultdict(list)
                for task in tasks:
                    groups[(task.radar.rain_mm_h.shape, task.job.params.steps)].append(task)
                for group in groups.values():
                    if self.draining_too_long():
                        for task in group:
                            self._release(task.delivery)
                        continue
                    self._run_group(group)
        finally:
            with self._in_hand_lock:
                self._in_hand = []
                self._lost.clear()

    def _claimed_groups(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        """The claim split, in claim order, into the batches it will run as, read from the job
        records without starting them: by the input grid the API recorded and the steps. A job
        delivered before (or one without a record, which `start` settles) is a group alone."""
        groups: dict[Any, list[Delivery]] = {}
        for delivery in deliveries:
            job = self.store.get(delivery.job_id)
            key: Any = delivery.message_id
            if job is not None and job.deliveries == 0:
                key = (job.input_shape, job.params.steps)
            groups.setdefault(key, []).append(delivery)
        return list(groups.values())

    def _start(self, delivery: Delivery) -> _Task | None:
        if self.is_lost(delivery):  # taken over while earlier jobs of the claim ran
            return None
        started = self.store.start(delivery, self.consumer)
        if started.outcome != "run":
            level = logging.WARNING if started.outcome == "dead_lettered" else logging.INFO
            logger.log(level, "job=%s not run: %s", delivery.job_id, started.outcome)
            return None
        job = started.job
        assert job is not None
        if job.deliveries == 1:
            self.store.observe(HIST_QUEUE_WAIT_S, (job.started_ms - job.created_ms) / 1000)
        else:
            logger.warning("job=%s redelivered (delivery %d)", job.id, job.deliveries)
        data = self.store.load_input(job.id)
        if data is None:
            self.handle_failure(
                delivery,
                job,
                "input-expired",
                f"the uploaded radar file expired ({self.settings.input_ttl_s} s) before a "
                "worker got to the job; submit it again",
            )
            return None
        try:
            radar = read_radar_netcdf(
                data, self.pipeline.config, zr_a=self.settings.zr_a, zr_b=self.settings.zr_b
            )
        except RadarInputError as exc:
            self.handle_failure(delivery, job, exc.code, exc.detail)
            return None
        return _Task(delivery, job, radar)

    def _run_group(self, group: list[_Task]) -> None:
        """One forecast_batch over jobs of the same grid and steps; on a cancellation, the
        cancelled jobs are dismissed and the others run again (their seeds make the rerun
        identical)."""
        from models.pipeline import ForecastRequest, IntensityConstraint

        pending = list(group)
        while pending:
            # those another worker took over are its jobs now (not even progress is ours to write)
            pending = [t for t in pending if not self.is_lost(t.delivery)]
            if not pending:
                return
            steps = pending[0].job.params.steps
            for task in pending:
                self.store.set_progress(task.job.id, 0, steps)
            requests = []
            for task in pending:
                params = task.job.params
                constraint = (
                    IntensityConstraint(params.constraint.target_mm_h, params.constraint.strength)
                    if params.constraint
                    else None
                )
                requests.append(
                    ForecastRequest(
                        # at the model's pixel size (block means of a finer grid)
                        past_mm_h=task.radar.model_rain_mm_h,
                        members=params.members,
                        steps=params.steps,
                        seed=params.seed,
                        constraint=constraint,
                    )
                )
            on_step = _StepMonitor(self, [task.delivery for task in pending])
            started = time.monotonic()
            logger.info(
                "running %d job(s) as one batch: %s",
                len(pending),
                ", ".join(f"job={t.job.id}" for t in pending),
            )
            try:
                forecasts = self.pipeline.forecast_batch(requests, on_step)
            except _Cancelled as cancelled:
                for task in pending:
                    if task.job.id in cancelled.job_ids:
                        self.handle_dismissed(task)
                pending = [t for t in pending if t.job.id not in cancelled.job_ids]
                continue
            except _Lost:
                # the rest run again without them (same seeds: the same forecasts)
                continue
            except _Released:
                for task in pending:
                    self._release(task.delivery)
                    logger.info("job=%s released back to the queue (shutdown)", task.job.id)
                return
            except Exception as exc:
                logger.exception("forecast failed for %d job(s)", len(pending))
                for task in pending:
                    self.handle_failure(
                        task.delivery,
                        task.job,
                        "forecast-failed",
                        f"the forecast failed in the worker ({type(exc).__name__}: {exc}); "
                        "report the job id to the operator",
                    )
                return
            self.store.observe(HIST_BATCH_SIZE, len(pending))
            for task, forecast in zip(pending, forecasts, strict=True):
                self.handle_success(task, forecast, started)
            return

    # ------------------------------------------------------------------ outcomes
    def handle_success(self, task: _Task, forecast_mm_h: np.ndarray, started: float) -> None:
        """Write the output NetCDF and store it (the store acknowledges the job after).

        forecast_mm_h (`(members, T_out, H, W)` float32): rain rate [mm h-1] on the input grid,
        NaN = no coverage; `started` is the `time.monotonic()` at which the batch began.
        """
        job, params = task.job, task.job.params
        if self._dropped(task.delivery):
            return
        try:
            data = write_forecast_netcdf(
                # back on the input's grid where the model ran on coarser pixels
                task.radar.to_input_grid(forecast_mm_h),
                task.radar,
                interval_s=self.pipeline.config.interval_s,
                thresholds_mm_h=params.thresholds_mm_h,
                products=params.products,
                percentiles=params.percentiles,
                attrs={
                    "model_name": self.metadata.name,
                    "model_version": self.metadata.version,
                    "weights_sha256": self.metadata.weights_checksum,
                    "job_id": job.id,
                    "steps": params.steps,
                    "seed": params.seed,
                    "constraint": {
                        "type": params.constraint.type,
                        "target_mm_h": params.constraint.target_mm_h,
                        "strength": params.constraint.strength,
                    }
                    if params.constraint
                    else None,
                    # what was done to the input's interval and pixels
                    **task.radar.processing_attrs,
                },
                # the forecast is not used after this: masked and rounded in place, one
                # ensemble-sized copy less at the job's memory peak
                overwrite_input=True,
            )
        except Exception as exc:
            logger.exception("job=%s: writing the forecast NetCDF failed", job.id)
            self.handle_failure(
                task.delivery,
                job,
                "output-failed",
                f"writing the forecast file failed ({type(exc).__name__}: {exc}); report the "
                "job id to the operator",
            )
            return
        if self._dropped(task.delivery):
            return
        # a lease lost from here on still cannot yield a second, different result: the store
        # keeps the first one, and the other worker computes the same forecast (same seed)
        stored = self.store.complete(task.delivery, data)
        self._settled(task.delivery)
        run_s = time.monotonic() - started
        self.store.observe(HIST_RUN_S, run_s)
        status = stored.status.value if stored else "gone"
        logger.info(
            "job=%s finished in %.1f s (%d bytes); status %s", job.id, run_s, len(data), status
        )

    def handle_failure(self, delivery: Delivery, job: Job, code: str, detail: str) -> None:
        if self._dropped(delivery):
            return
        self.store.fail(delivery, code, detail)
        self._settled(delivery)
        logger.warning("job=%s failed: %s", job.id, code)

    def handle_dismissed(self, task: _Task) -> None:
        if self._dropped(task.delivery):
            return
        self.store.dismiss(task.delivery)
        self._settled(task.delivery)
        logger.info("job=%s dismissed at the client's request", task.job.id)

    def _dropped(self, delivery: Delivery) -> bool:
        """True when another worker took the job over: it settles the job, this one must not."""
        if not self.is_lost(delivery):
            return False
        logger.warning("job=%s dropped: another worker holds it now", delivery.job_id)
        return True

    def draining_too_long(self) -> bool:
        """True when the jobs in hand should be released rather than finished."""
        if self._release_now.is_set():
            return True
        if self._stop is None or not self._stop.is_set():
            return False
        now = time.monotonic()
        if self._stop_seen_at is None:
            self._stop_seen_at = now
            logger.info(
                "worker %s stopping: finishing the jobs in hand (up to %.0f s)",
                self.consumer,
                self.settings.worker_drain_s,
            )
        return now - self._stop_seen_at > self.settings.worker_drain_s


class _StepMonitor:
    """The sampler callback: lost leases, progress (throttled), cancellation, shutdown."""

    def __init__(self, worker: Worker, deliveries: list[Delivery]) -> None:
        self.worker = worker
        self.deliveries = deliveries
        self.job_ids = [delivery.job_id for delivery in deliveries]
        self.last_progress = 0.0

    def __call__(self, step: int, total: int) -> None:
        # first, so that no progress is written over that of the worker that holds them now
        lost = {d.job_id for d in self.deliveries if self.worker.is_lost(d)}
        if lost:
            raise _Lost(lost)
        store = self.worker.store
        now = time.monotonic()
        cancelled: set[str] = set()
        try:
            interval_s = self.worker.settings.progress_interval_s
            if step == total or now - self.last_progress >= interval_s:
                for job_id in self.job_ids:
                    store.set_progress(job_id, step, total)
                self.last_progress = now
            cancelled = store.cancel_requested(self.job_ids)
        except Exception as exc:  # a store hiccup must not fail the forecast; retry next step
            logger.warning("progress/cancel check failed at step %d: %s", step, exc)
        if cancelled:
            raise _Cancelled(cancelled)
        if self.worker.draining_too_long():
            raise _Released


# ---------------------------------------------------------------------- embedded and CLI


def start_worker_threads(
    settings: Settings, store: JobStore, model_dir: Path, count: int, stop: threading.Event
) -> list[threading.Thread]:
    """Run `count` workers as threads of this process on `store` (embedded mode)."""
    compute_threads = settings.worker_threads or threads_per_worker(count)
    threads = []
    for index in range(count):
        worker = Worker(
            settings,
            store,
            model_dir,
            consumer=f"{new_consumer_id()}-t{index}",
            threads=compute_threads,
        )
        thread = threading.Thread(
            target=_run_embedded, args=(worker, stop), name=f"worker-{index}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def _run_embedded(worker: Worker, stop: threading.Event) -> None:
    try:
        worker.run(stop)
    except Exception:
        logger.exception("embedded worker %s crashed", worker.consumer)


def _check(store: JobStore, settings: Settings) -> int:
    """Exit status of `nowcast worker --check`: 0 when a worker of this host beats."""
    host_prefix = f"{socket.gethostname()}-"
    try:
        alive = [
            name
            for name in store.live_workers(settings.worker_heartbeat_max_age_s)
            if name.startswith(host_prefix)
        ]
    except Exception as exc:
        print(f"unhealthy: the queue store does not answer: {exc}")
        return 1
    print(f"{len(alive)} live worker(s) on {socket.gethostname()}")
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    """`nowcast worker`: one worker process on the Redis queue."""
    parser = argparse.ArgumentParser(
        prog="nowcast worker",
        description="Run one worker on the Redis queue (NOWCAST_REDIS_URL). Without Redis, use "
        "`nowcast serve --workers N` (embedded queue).",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 when a worker on this host (container) sent a heartbeat "
        "recently, else 1",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = get_settings()
    if not settings.redis_url:
        logger.error(
            "nowcast worker needs a Redis queue: set NOWCAST_REDIS_URL (e.g. "
            "redis://localhost:6379/0), or run `nowcast serve --workers N` for the embedded queue"
        )
        return 2
    store = create_store(settings)
    if args.check:
        return _check(store, settings)

    from service.model_source import resolve_model_dir

    worker = Worker(settings, store, resolve_model_dir(settings))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            logger.warning("second %s: releasing the jobs in hand", signal.Signals(signum).name)
            worker.release_now()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.load()
    worker.run(stop)
    store.close()
    return 0
