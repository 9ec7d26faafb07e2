"""Prometheus metrics for a Monque engine (``pip install 'monque-py[prometheus]'``).

``MonqueMetrics(monque)`` listens to the engine's events and registers one collector (in
``prometheus_client.REGISTRY`` unless another registry is given) that exposes, per job name
(label ``name``):

- ``monque_jobs_started_total``, ``monque_jobs_completed_total``,
  ``monque_jobs_failed_total`` (label ``retry``: ``"true"`` when the job runs again),
  ``monque_jobs_retried_total``, ``monque_jobs_lost_total``, ``monque_jobs_recovered_total``,
  ``monque_jobs_cancelled_total``: counters of what this process saw happen;
- ``monque_job_duration_seconds`` (label ``outcome``: ``completed`` or ``failed``): run time
  of handlers, a histogram;
- ``monque_job_lateness_seconds``: time from a job's due time (``next_run_at``) to its start,
  in the server's time, a histogram;
- ``monque_queue_depth`` (label ``status``): jobs in the collection per name and status, a
  gauge read from a snapshot that one aggregation (``$group`` by name and status) refreshes in
  the background at most every ``depth_interval`` seconds. A scrape never waits for the
  database; ``monque_queue_depth_refreshed_timestamp_seconds`` says how old the snapshot is.

The counters count events of this engine: a worker's counters count its own jobs, and
management events (cancel, retry) count where they were called. Sum over instances in the
query (``sum by (name) (rate(monque_jobs_completed_total[5m]))``); the depth gauge is the
collection's, the same on every instance (take ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "monque.metrics needs prometheus_client: pip install 'monque-py[prometheus]'"
    ) from exc

from monque import management as mg
from monque.events import Events
from monque.job import Job, JobStatus, utc, utcnow

if TYPE_CHECKING:
    from monque.engine import Monque

__all__ = ["DURATION_BUCKETS", "LATENESS_BUCKETS", "MonqueMetrics"]

log = logging.getLogger("monque.metrics")

# Jobs run from milliseconds to hours; the client's default buckets stop at 10 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
LATENESS_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600,
)  # fmt: skip

_STATUSES = tuple(status.value for status in JobStatus)
# Start times of runs whose end this process did not see (a lost job's handler still runs;
# a stop abandoned it): kept at most this many, the oldest dropped first.
_MAX_TRACKED = 10_000


class MonqueMetrics(Collector):
    """Prometheus metrics of ``monque`` (see the module); ``close()`` detaches them.

    ``registry``: where to register (``prometheus_client.REGISTRY`` when None). Two instances
    cannot share a registry (their names clash); serve one engine per registry.

    ``depth_interval``: seconds between two refreshes of the queue depth snapshot. On a sync
    database handle a daemon thread refreshes it; on an async one a task on the engine's loop
    (started when the worker starts, or at once when built inside a running loop).
    ``refresh()`` / ``refresh_sync()`` refresh it now.
    """

    def __init__(
        self,
        monque: Monque,
        registry: CollectorRegistry | None = None,
        *,
        depth_interval: float = 15.0,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        lateness_buckets: Sequence[float] = LATENESS_BUCKETS,
    ) -> None:
        if depth_interval <= 0:
            raise ValueError(f"depth_interval must be positive, not {depth_interval!r}")
        self.monque = monque
        self.depth_interval = float(depth_interval)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["name", *labels], registry=None)

        self.started = counter("monque_jobs_started", "Job runs started by this instance.")
        self.completed = counter("monque_jobs_completed", "Job runs that completed.")
        self.failed = counter(
            "monque_jobs_failed",
            "Job runs that failed; retry says whether they run again.",
            "retry",
        )
        self.retried = counter("monque_jobs_retried", "Failed or cancelled jobs put back to run.")
        self.lost = counter("monque_jobs_lost", "Runs whose lease this instance lost.")
        self.recovered = counter(
            "monque_jobs_recovered", "Jobs with an expired lease taken back by recovery."
        )
        self.cancelled = counter("monque_jobs_cancelled", "Jobs cancelled.")
        self.duration = Histogram(
            "monque_job_duration_seconds",
            "Run time of job handlers, by outcome (completed or failed).",
            ["name", "outcome"],
            buckets=duration_buckets,
            registry=None,
        )
        self.lateness = Histogram(
            "monque_job_lateness_seconds",
            "Time from a job's due time to its start (server time).",
            ["name"],
            buckets=lateness_buckets,
            registry=None,
        )
        self._own: list[Counter | Histogram] = [
            self.started,
            self.completed,
            self.failed,
            self.retried,
            self.lost,
            self.recovered,
            self.cancelled,
            self.duration,
            self.lateness,
        ]

        self._lock = threading.Lock()
        self._depth: dict[str, dict[str, int]] = {}
        self._seen_names: set[str] = set()
        self._refreshed_at: float | None = None  # time.time() of the last good snapshot
        self._reads_begun = 0  # numbers each depth read, so an older one never overwrites
        self._kept_read = 0
        self._runs: dict[Any, float] = {}  # job id -> time.monotonic() at its start
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._task_loop: asyncio.AbstractEventLoop | None = None

        self._listeners: list[tuple[str, Callable[..., None]]] = [
            (Events.WORKER_STARTED, self._on_worker_started),
            (Events.JOB_START, self._on_start),
            (Events.JOB_COMPLETE, self._on_complete),
            (Events.JOB_FAIL, self._on_fail),
            (Events.JOB_LOST, self._on_lost),
            (Events.JOB_RECOVERED, self._on_recovered),
            (Events.JOB_CANCELLED, self._on_cancelled),
            (Events.JOB_RETRIED, self._on_retried),
        ]
        self.registry = REGISTRY if registry is None else registry
        self.registry.register(self)
        for event, listener in self._listeners:
            monque.on(event, listener)
        self._start_refresher()

    # -- events -----------------------------------------------------------------------------

    def _on_worker_started(self) -> None:
        self._start_refresher()

    def _on_start(self, job: Job[Any]) -> None:
        self._start_refresher()
        self.started.labels(job.name).inc()
        self._runs[job.id] = time.monotonic()
        while len(self._runs) > _MAX_TRACKED:
            del self._runs[next(iter(self._runs))]
        started = job.started_at or self._now()
        lateness = (utc(started) - utc(job.next_run_at)).total_seconds()
        self.lateness.labels(job.name).observe(max(lateness, 0.0))

    def _on_complete(self, job: Job[Any], seconds: float) -> None:
        self._runs.pop(job.id, None)
        self.completed.labels(job.name).inc()
        self.duration.labels(job.name, "completed").observe(max(float(seconds), 0.0))

    def _on_fail(self, job: Job[Any], error: BaseException, will_retry: bool) -> None:
        self.failed.labels(job.name, "true" if will_retry else "false").inc()
        began = self._runs.pop(job.id, None)
        if began is not None:
            self.duration.labels(job.name, "failed").observe(time.monotonic() - began)

    def _on_lost(self, job: Job[Any]) -> None:
        self._runs.pop(job.id, None)
        self.lost.labels(job.name).inc()

    def _on_recovered(self, job: Job[Any]) -> None:
        self.recovered.labels(job.name).inc()

    def _on_cancelled(self, job: Job[Any]) -> None:
        self._runs.pop(job.id, None)
        self.cancelled.labels(job.name).inc()

    def _on_retried(self, job: Job[Any]) -> None:
        self.retried.labels(job.name).inc()

    def _now(self) -> datetime:
        clock = getattr(self.monque, "clock", None)
        return clock.now() if clock is not None else utcnow()

    # -- queue depth ------------------------------------------------------------------------

    async def refresh(self) -> dict[str, dict[str, int]]:
        """Read the queue depth now (one aggregation), keep it as the snapshot unless a read
        begun later was kept first, and return what this read saw."""
        read = self._begin_read()
        counts = await self.monque.jobs.run(mg.count_by_name())
        self._keep(counts, read)
        return counts

    def refresh_sync(self) -> dict[str, dict[str, int]]:
        """``refresh()`` for a sync database handle (on an async one, await ``refresh()``)."""
        read = self._begin_read()
        counts = self.monque.jobs.run_sync(mg.count_by_name())
        self._keep(counts, read)
        return counts

    @property
    def depth(self) -> dict[str, dict[str, int]]:
        """The last snapshot: ``{name: {status: count}}``."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._depth.items()}

    def _begin_read(self) -> int:
        with self._lock:
            self._reads_begun += 1
            return self._reads_begun

    def _keep(self, counts: dict[str, dict[str, int]], read: int) -> None:
        with self._lock:
            # Reads overlap (the background refresher and a caller's refresh()): one begun
            # before the snapshot we hold saw an older queue, so it must not replace it.
            if read < self._kept_read:
                return
            self._kept_read = read
            self._depth = {name: dict(by_status) for name, by_status in counts.items()}
            self._seen_names.update(counts)
            self._refreshed_at = time.time()

    def _start_refresher(self) -> None:
        if self._closed:
            return
        if not self.monque.jobs.is_async:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._refresh_in_thread, name="monque-metrics", daemon=True
                )
                self._thread.start()
            return
        # An async handle belongs to its loop: refresh there.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started by worker:started or the first job:start
        if self._task is not None and not self._task.done() and self._task_loop is loop:
            return
        self._task_loop = loop
        self._task = loop.create_task(self._refresh_on_loop(), name="monque-metrics")

    def _refresh_in_thread(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_sync()
            except Exception as exc:  # the last snapshot stays; the next refresh may work
                log.warning("queue depth refresh failed: %s", exc)
                log.debug("queue depth refresh failed", exc_info=True)
            self._stop.wait(self.depth_interval)

    async def _refresh_on_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("queue depth refresh failed: %s", exc)
                log.debug("queue depth refresh failed", exc_info=True)
            await asyncio.sleep(self.depth_interval)

    # -- the collector ------------------------------------------------------------------------

    def _depth_families(self, with_samples: bool) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "monque_queue_depth",
            "Jobs in the collection per name and status (a snapshot; see the refreshed timestamp).",
            labels=["name", "status"],
        )
        refreshed = GaugeMetricFamily(
            "monque_queue_depth_refreshed_timestamp_seconds",
            "Unix time of the queue depth snapshot.",
        )
        if with_samples:
            with self._lock:
                snapshot = {name: dict(counts) for name, counts in self._depth.items()}
                names = sorted(self._seen_names)
                at = self._refreshed_at
            if at is not None:
                # Every status of every name seen: a count that drops to 0 reads 0, not gone.
                for name in names:
                    counts = snapshot.get(name, {})
                    statuses = list(_STATUSES) + sorted(set(counts) - set(_STATUSES))
                    for status in statuses:
                        depth.add_metric([name, status], counts.get(status, 0))
                refreshed.add_metric([], at)
        yield depth
        yield refreshed

    def collect(self) -> Iterable[Metric]:
        for metric in self._own:
            yield from metric.collect()
        yield from self._depth_families(True)

    def describe(self) -> Iterable[Metric]:
        for metric in self._own:
            yield from metric.describe()
        yield from self._depth_families(False)

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and refreshing, and unregister from the registry. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for event, listener in self._listeners:
            self.monque.off(event, listener)
        self._stop.set()
        task, loop = self._task, self._task_loop
        if task is not None and loop is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # a refresh blocked on the database is left
        with contextlib.suppress(KeyError):
            self.registry.unregister(self)

    def __enter__(self) -> MonqueMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
