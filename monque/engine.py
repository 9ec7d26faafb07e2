"""``Monque``: the public engine, with an async face and a ``*_sync`` face over one core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar, overload

from bson import ObjectId
from pymongo.errors import PyMongoError

from monque import management as mg
from monque import tracing
from monque.clock import ServerClock
from monque.connection import DatabaseHandle, normalize_database
from monque.cron import check_cron, get_zone, next_run
from monque.durations import to_seconds
from monque.errors import ConnectionError, InvalidOptionError, UnknownJobError
from monque.events import EventEmitter, Events
from monque.job import Job, JobStatus, utcnow
from monque.lifecycle import cancelled_update, new_document
from monque.options import MonqueOptions
from monque.policy import RetryPolicy
from monque.storage import JobCollection, Operation, ensure_indexes
from monque.storage import jobs as ops
from monque.validation import (
    check_name,
    check_payload,
    check_priority,
    check_unique_key,
    resolve_run_at,
)
from monque.worker.registry import Handler, WorkerRegistry
from monque.worker.run import RunState
from monque.worker.runtime import STOP_GRACE, Phase, WorkerRuntime

__all__ = ["Monque"]

log = logging.getLogger("monque.engine")

H = TypeVar("H", bound=Handler)
R = TypeVar("R")


@dataclass(frozen=True)
class RetryOverrides:
    max_retries: int | None
    backoff_base: float | timedelta | None
    max_backoff: float | timedelta | None
    non_retryable: tuple[type[BaseException], ...]

    def apply(self, base: RetryPolicy) -> RetryPolicy | None:
        unset = self.max_retries is None and self.backoff_base is None and self.max_backoff is None
        if unset and not self.non_retryable:
            return None
        if self.max_retries is not None and (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 1
        ):
            raise InvalidOptionError("max_retries must be an int >= 1")
        return base.with_overrides(
            max_retries=self.max_retries,
            backoff_base=_seconds_or_none(self.backoff_base, "backoff_base"),
            max_backoff=_seconds_or_none(self.max_backoff, "max_backoff"),
            non_retryable=self.non_retryable or None,
        )


def _seconds_or_none(value: float | timedelta | None, name: str) -> float | None:
    return to_seconds(value, name) if value is not None else None


class RunInfo(NamedTuple):
    """A job this instance runs now, and where its run is (see ``RunState``)."""

    job: Job[Any]
    state: RunState


_JobOp = Operation[tuple[dict[str, Any], bool]]
JobSpecLike = tuple[str, Any] | tuple[str, Any, dict[str, Any]]


class Monque(EventEmitter):
    """A MongoDB-backed job queue and cron scheduler.

    ``db`` is any handle ``normalize_database`` accepts. Options are keyword arguments (see
    ``MonqueOptions``); durations take seconds or a ``timedelta``. ``known_jobs`` (optional)
    lists the job names this app may enqueue, turning a typo into ``UnknownJobError``.

    Async apps ``await`` the methods; programs without an event loop use the ``*_sync`` twins
    (``enqueue_sync``, ``now_sync``, ``schedule_sync``, ``initialize_sync``) and ``run_sync()``,
    which need a sync handle (pymongo ``Database``/``MongoClient``, motor, mongoengine).

    Times written and compared (due times, leases) are the server's: the offset of this host's
    clock (``clock``, the UTC wall clock by default; injectable for tests) to the server's is
    measured at ``initialize()`` and with every heartbeat.
    """

    def __init__(
        self,
        db: object,
        *,
        database: str | None = None,
        known_jobs: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.clock = ServerClock(clock or utcnow)
        self.options = MonqueOptions.from_kwargs(**options)
        self.database: DatabaseHandle = normalize_database(db, database)
        self.jobs = JobCollection(self.database, self.options.collection)
        self.known_jobs = (
            frozenset(check_name(n) for n in known_jobs) if known_jobs is not None else None
        )
        self._registry = WorkerRegistry(self.options.worker_concurrency)
        self._runtime: WorkerRuntime | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._initialized = False
        self._stop_requested: Callable[[], None] | None = None

    @property
    def instance_id(self) -> str:
        return self.options.instance_id

    @property
    def running_jobs(self) -> list[Job[Any]]:
        """Jobs this instance is running now (handlers that have not returned yet)."""
        return [info.job for info in self.runs]

    @property
    def runs(self) -> list[RunInfo]:
        """The runs of this instance whose handlers have not returned, with their states: a
        handler past its timeout, or cancelled, still holds its slot until it returns."""
        if self._runtime is None:
            return []
        return [RunInfo(run.job, run.state) for run in self._runtime.runs]

    @property
    def is_running(self) -> bool:
        return self._runtime is not None and self._runtime.started

    # -- set-up ---------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Measure the offset to the server's clock and create the indexes (unless
        ``create_indexes=False``). Idempotent."""
        if not self._initialized:
            await self.jobs.run(self.clock.measure())
            if self.options.create_indexes:
                await self.jobs.run(ensure_indexes(bool(self.options.retention)))
        self._initialized = True

    def initialize_sync(self) -> None:
        if not self._initialized:
            self.jobs.run_sync(self.clock.measure())
            if self.options.create_indexes:
                self.jobs.run_sync(ensure_indexes(bool(self.options.retention)))
        self._initialized = True

    # -- producing ------------------------------------------------------------------------

    async def enqueue(
        self,
        name: str,
        data: Any = None,
        *,
        unique_key: str | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
    ) -> Job[Any]:
        """Store a job; with ``unique_key``, return the active job that already has it.

        ``job.created`` tells whether this call inserted it.
        """
        with tracing.enqueue_span(name):
            return await self._store(
                self._enqueue_op(name, data, unique_key, run_at, delay, priority)
            )

    def enqueue_sync(
        self,
        name: str,
        data: Any = None,
        *,
        unique_key: str | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
    ) -> Job[Any]:
        """``enqueue`` for programs without an event loop."""
        with tracing.enqueue_span(name):
            return self._store_sync(
                self._enqueue_op(name, data, unique_key, run_at, delay, priority)
            )

    async def enqueue_many(self, jobs: Iterable[JobSpecLike]) -> list[Job[Any]]:
        """Store many jobs with one unordered ``insert_many``.

        Each item is ``(name, data)`` or ``(name, data, options)`` with ``enqueue``'s keyword
        options. Unique keys are honoured: a job whose key an active job holds comes back as
        that job (``created`` False). Everything is validated before anything is written.
        """
        jobs = list(jobs)
        with tracing.enqueue_span(_batch_name(jobs), len(jobs)):
            return await self._store_many(self._many_op(jobs))

    def enqueue_many_sync(self, jobs: Iterable[JobSpecLike]) -> list[Job[Any]]:
        jobs = list(jobs)
        with tracing.enqueue_span(_batch_name(jobs), len(jobs)):
            return self._store_many_sync(self._many_op(jobs))

    def _many_op(self, jobs: Iterable[JobSpecLike]) -> Operation[list[tuple[dict[str, Any], bool]]]:
        docs = []
        now = self.clock.now()
        for item in jobs:
            if not isinstance(item, tuple) or not 2 <= len(item) <= 3:
                raise InvalidOptionError("enqueue_many takes (name, data) or (name, data, options)")
            name, data, *rest = item
            options: dict[str, Any] = dict(rest[0]) if rest else {}
            unknown = set(options) - {"unique_key", "run_at", "delay", "priority"}
            if unknown:
                raise InvalidOptionError(f"unknown enqueue option(s): {', '.join(sorted(unknown))}")
            docs.append(self._document(name, data, now=now, **options))
        return ops.insert_many(docs)

    async def now(self, name: str, data: Any = None, **kwargs: Any) -> Job[Any]:
        """Enqueue a job to run as soon as a worker is free."""
        return await self.enqueue(name, data, **kwargs)

    def now_sync(self, name: str, data: Any = None, **kwargs: Any) -> Job[Any]:
        return self.enqueue_sync(name, data, **kwargs)

    async def schedule(
        self,
        cron: str,
        name: str,
        data: Any = None,
        *,
        unique_key: str | None = None,
        timezone: str | None = None,
        priority: int = 0,
    ) -> Job[Any]:
        """Create or update a recurring job; idempotent per ``(name, unique_key)``.

        Without ``unique_key`` the schedule is keyed by its name (one schedule per name), so
        every boot of every instance leaves one recurring job; a changed cron, timezone or data
        updates it.
        """
        return await self._store(
            self._schedule_op(cron, name, data, unique_key, timezone, priority)
        )

    def schedule_sync(
        self,
        cron: str,
        name: str,
        data: Any = None,
        *,
        unique_key: str | None = None,
        timezone: str | None = None,
        priority: int = 0,
    ) -> Job[Any]:
        return self._store_sync(self._schedule_op(cron, name, data, unique_key, timezone, priority))

    def _enqueue_op(
        self,
        name: str,
        data: Any,
        unique_key: str | None,
        run_at: datetime | None,
        delay: float | timedelta | None,
        priority: int,
    ) -> _JobOp:
        doc = self._document(
            name, data, unique_key=unique_key, run_at=run_at, delay=delay, priority=priority
        )
        return ops.enqueue_unique(doc) if unique_key is not None else ops.insert_job(doc)

    def _document(
        self,
        name: str,
        data: Any,
        *,
        now: datetime | None = None,
        unique_key: str | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """A validated new job document (every check happens before any write)."""
        self._check_job_name(name)
        if unique_key is not None:
            check_unique_key(unique_key)
        check_priority(priority)
        check_payload(data, self.options.payload_limit)
        now = now or self.clock.now()
        doc = new_document(
            name,
            data,
            now=now,
            run_at=resolve_run_at(run_at, delay, now),
            unique_key=unique_key,
            priority=priority,
        )
        context = tracing.carrier()  # the enqueue span's, continued by the run
        if context is not None:
            doc[tracing.FIELD] = context
        return doc

    def _schedule_op(
        self,
        cron: str,
        name: str,
        data: Any,
        unique_key: str | None,
        timezone: str | None,
        priority: int,
    ) -> _JobOp:
        expression = check_cron(cron)
        self._check_job_name(name)
        key = check_unique_key(unique_key) if unique_key is not None else f"schedule:{name}"
        get_zone(timezone)
        check_priority(priority)
        check_payload(data, self.options.payload_limit)
        now = self.clock.now()
        doc = new_document(
            name,
            data,
            now=now,
            run_at=next_run(expression, now, timezone),
            unique_key=key,
            priority=priority,
            repeat_interval=expression,
            timezone=timezone,
        )
        if unique_key is None:
            duplicate = cancelled_update(now, self.options.retention).update
            return ops.upsert_named_schedule(doc, duplicate)
        return ops.upsert_schedule(doc)

    def _check_job_name(self, name: object) -> None:
        check_name(name)
        if self.known_jobs is not None and name not in self.known_jobs:
            raise UnknownJobError(
                f"unknown job {name!r}; known jobs: {', '.join(sorted(self.known_jobs))}"
            )

    async def _store(self, operation: _JobOp) -> Job[Any]:
        try:
            await self.initialize()
            doc, created = await self.jobs.run(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"storing the job failed: {exc}") from exc
        job = Job.from_document(doc, created=created)
        if created:
            self._woken_by(job)
        return job

    def _woken_by(self, job: Job[Any]) -> None:
        # Safe from any thread or loop: the runtime hands the wake-up to its own loop.
        if self._runtime is not None:
            if job.next_run_at <= self.clock.now():
                self._runtime.wake()
            else:
                self._runtime.wake_at(job.next_run_at)

    def _wake(self) -> None:
        if self._runtime is not None:
            self._runtime.wake()

    async def _store_many(
        self, operation: Operation[list[tuple[dict[str, Any], bool]]]
    ) -> list[Job[Any]]:
        try:
            await self.initialize()
            stored = await self.jobs.run(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"storing the jobs failed: {exc}") from exc
        self._wake()
        return [Job.from_document(doc, created=created) for doc, created in stored]

    def _store_many_sync(
        self, operation: Operation[list[tuple[dict[str, Any], bool]]]
    ) -> list[Job[Any]]:
        try:
            self.initialize_sync()
            stored = self.jobs.run_sync(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"storing the jobs failed: {exc}") from exc
        self._wake()
        return [Job.from_document(doc, created=created) for doc, created in stored]

    def _store_sync(self, operation: _JobOp) -> Job[Any]:
        try:
            self.initialize_sync()
            doc, created = self.jobs.run_sync(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"storing the job failed: {exc}") from exc
        job = Job.from_document(doc, created=created)
        if created:
            self._woken_by(job)
        return job

    # -- managing jobs --------------------------------------------------------------------

    async def _manage(self, operation: Operation[R]) -> R:
        try:
            return await self.jobs.run(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"job management failed: {exc}") from exc

    def _manage_sync(self, operation: Operation[R]) -> R:
        try:
            return self.jobs.run_sync(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"job management failed: {exc}") from exc

    async def get_job(self, job_id: ObjectId | str) -> Job[Any] | None:
        """The job with this id (ObjectId or its hex string), or None."""
        return await self._manage(mg.get_job(mg.parse_id(job_id)))

    def get_job_sync(self, job_id: ObjectId | str) -> Job[Any] | None:
        return self._manage_sync(mg.get_job(mg.parse_id(job_id)))

    async def get_jobs(
        self,
        *,
        name: str | None = None,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> mg.JobPage:
        """A page of jobs, newest first; ``page.next_cursor`` fetches the next page."""
        return await self._manage(
            mg.get_jobs(name=name, status=status, limit=limit, cursor=cursor, now=self.clock.now())
        )

    def get_jobs_sync(
        self,
        *,
        name: str | None = None,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> mg.JobPage:
        return self._manage_sync(
            mg.get_jobs(name=name, status=status, limit=limit, cursor=cursor, now=self.clock.now())
        )

    async def unschedule(self, name: str, *, unique_key: str | None = None) -> int:
        """Remove the recurring job ``schedule()`` stored for ``(name, unique_key)``; returns
        how many were removed (0 or 1). ``JobStateError`` while that job is running."""
        return await self._manage(self._unschedule_op(name, unique_key))

    def unschedule_sync(self, name: str, *, unique_key: str | None = None) -> int:
        return self._manage_sync(self._unschedule_op(name, unique_key))

    def _unschedule_op(self, name: str, unique_key: str | None) -> Operation[int]:
        check_name(name)
        key = check_unique_key(unique_key) if unique_key is not None else f"schedule:{name}"
        return mg.unschedule(name, key)

    async def cancel_job(self, job_id: ObjectId | str) -> Job[Any]:
        """Cancel a pending job now, or ask the worker running it to stop (it ends cancelled).

        ``JobStateError`` for finished jobs, ``JobNotFoundError`` for unknown ids.
        """
        job, immediate = await self._manage(self._cancel_op(job_id))
        return self._cancelled(job, immediate)

    def cancel_job_sync(self, job_id: ObjectId | str) -> Job[Any]:
        job, immediate = self._manage_sync(self._cancel_op(job_id))
        return self._cancelled(job, immediate)

    def _cancel_op(self, job_id: ObjectId | str) -> Operation[tuple[Job[Any], bool]]:
        return mg.cancel_job(mg.parse_id(job_id), self.clock.now(), self.options.retention)

    def _cancelled(self, job: Job[Any], immediate: bool) -> Job[Any]:
        if immediate:
            self.emit(Events.JOB_CANCELLED, job)
        return job

    async def retry_job(self, job_id: ObjectId | str) -> Job[Any]:
        """Run a failed or cancelled job again now, with a fresh attempt budget."""
        job = await self._manage(mg.retry_job(mg.parse_id(job_id), self.clock.now()))
        self.emit(Events.JOB_RETRIED, job)
        self._wake()
        return job

    def retry_job_sync(self, job_id: ObjectId | str) -> Job[Any]:
        job = self._manage_sync(mg.retry_job(mg.parse_id(job_id), self.clock.now()))
        self.emit(Events.JOB_RETRIED, job)
        return job

    async def reschedule_job(self, job_id: ObjectId | str, run_at: datetime) -> Job[Any]:
        """Move a pending job's next run (timezone-aware ``run_at``)."""
        when = resolve_run_at(run_at, None, self.clock.now())
        job = await self._manage(mg.reschedule_job(mg.parse_id(job_id), when, self.clock.now()))
        self.emit(Events.JOB_RESCHEDULED, job)
        return job

    def reschedule_job_sync(self, job_id: ObjectId | str, run_at: datetime) -> Job[Any]:
        when = resolve_run_at(run_at, None, self.clock.now())
        job = self._manage_sync(mg.reschedule_job(mg.parse_id(job_id), when, self.clock.now()))
        self.emit(Events.JOB_RESCHEDULED, job)
        return job

    async def delete_job(self, job_id: ObjectId | str) -> Job[Any]:
        """Delete a job that is not running; returns what was deleted."""
        job = await self._manage(mg.delete_job(mg.parse_id(job_id)))
        self.emit(Events.JOB_DELETED, job)
        return job

    def delete_job_sync(self, job_id: ObjectId | str) -> Job[Any]:
        job = self._manage_sync(mg.delete_job(mg.parse_id(job_id)))
        self.emit(Events.JOB_DELETED, job)
        return job

    async def cancel_jobs(self, selector: mg.JobSelector) -> int:
        """Cancel the selected pending jobs; returns how many."""
        count = await self._manage(
            mg.cancel_jobs(selector, self.clock.now(), self.options.retention)
        )
        self.emit(Events.JOBS_CANCELLED, count, selector)
        return count

    def cancel_jobs_sync(self, selector: mg.JobSelector) -> int:
        count = self._manage_sync(
            mg.cancel_jobs(selector, self.clock.now(), self.options.retention)
        )
        self.emit(Events.JOBS_CANCELLED, count, selector)
        return count

    async def retry_jobs(self, selector: mg.JobSelector) -> int:
        """Retry the selected failed or cancelled jobs; returns how many."""
        count = await self._manage(mg.retry_jobs(selector, self.clock.now()))
        self.emit(Events.JOBS_RETRIED, count, selector)
        if count:
            self._wake()
        return count

    def retry_jobs_sync(self, selector: mg.JobSelector) -> int:
        count = self._manage_sync(mg.retry_jobs(selector, self.clock.now()))
        self.emit(Events.JOBS_RETRIED, count, selector)
        return count

    async def delete_jobs(self, selector: mg.JobSelector) -> int:
        """Delete the selected jobs that are not running; returns how many."""
        count = await self._manage(mg.delete_jobs(selector, self.clock.now()))
        self.emit(Events.JOBS_DELETED, count, selector)
        return count

    def delete_jobs_sync(self, selector: mg.JobSelector) -> int:
        count = self._manage_sync(mg.delete_jobs(selector, self.clock.now()))
        self.emit(Events.JOBS_DELETED, count, selector)
        return count

    async def get_stats(self, name: str | None = None) -> mg.QueueStats:
        """Counts per status, and mean time in queue and run time of completed jobs."""
        return await self._manage(mg.get_stats(name))

    def get_stats_sync(self, name: str | None = None) -> mg.QueueStats:
        return self._manage_sync(mg.get_stats(name))

    # -- consuming ------------------------------------------------------------------------

    @overload
    def worker(
        self,
        name: str,
        handler: None = None,
        *,
        concurrency: int | None = None,
        replace: bool = False,
        timeout: float | timedelta | None = None,
        max_retries: int | None = None,
        backoff_base: float | timedelta | None = None,
        max_backoff: float | timedelta | None = None,
        non_retryable: Iterable[type[BaseException]] = (),
    ) -> Callable[[H], H]: ...

    @overload
    def worker(
        self,
        name: str,
        handler: H,
        *,
        concurrency: int | None = None,
        replace: bool = False,
        timeout: float | timedelta | None = None,
        max_retries: int | None = None,
        backoff_base: float | timedelta | None = None,
        max_backoff: float | timedelta | None = None,
        non_retryable: Iterable[type[BaseException]] = (),
    ) -> H: ...

    def worker(
        self,
        name: str,
        handler: H | None = None,
        *,
        concurrency: int | None = None,
        replace: bool = False,
        timeout: float | timedelta | None = None,
        max_retries: int | None = None,
        backoff_base: float | timedelta | None = None,
        max_backoff: float | timedelta | None = None,
        non_retryable: Iterable[type[BaseException]] = (),
    ) -> H | Callable[[H], H]:
        """Register the handler for ``name`` (``async def`` or plain ``def``); also a decorator.

        ``concurrency`` bounds how many jobs of this name run at once on this instance
        (default ``worker_concurrency``). Registering a name twice raises
        ``WorkerRegistrationError`` unless ``replace=True``.

        ``timeout`` bounds one run (an async handler is cancelled, a sync one is flagged through
        ``job.should_stop`` and its result discarded; the run counts as a failure).
        ``max_retries``, ``backoff_base`` and ``max_backoff`` override the engine's retry policy;
        errors of a ``non_retryable`` type (and ``PermanentError``) fail the job at once.
        """
        overrides = RetryOverrides(max_retries, backoff_base, max_backoff, tuple(non_retryable))
        policy = overrides.apply(self.options.retry_policy)
        seconds = to_seconds(timeout, "timeout") if timeout is not None else None

        def register(fn: H) -> H:
            self._registry.register(
                name, fn, concurrency=concurrency, replace=replace, timeout=seconds, policy=policy
            )
            return fn

        return register if handler is None else register(handler)

    def configure_workers(
        self, *, only: Iterable[str] | None = None, concurrency: int | None = None
    ) -> None:
        """Keep only the workers named in ``only`` and/or set every worker's concurrency.

        For process-level tuning (the CLI's ``--names`` and ``--concurrency``); call before
        ``start()``.
        """
        self._registry.configure(only=only, concurrency=concurrency)

    @property
    def worker_names(self) -> list[str]:
        return [d.name for d in self._registry]

    async def start(self) -> None:
        """Initialize if needed and start processing the registered workers' jobs.

        Safe to call again after ``stop()``, on any event loop; concurrent calls share one
        start, and a ``stop()`` during it stops the worker it starts.
        """
        task = self._start_task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._start_task = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(task)

    async def _start(self) -> None:
        await self.initialize()
        runtime = self._runtime
        while runtime is not None and runtime.phase is Phase.STOPPING:
            await runtime.wait_stopped()  # a start during a stop starts a new worker after it
            runtime = self._runtime
        if runtime is None or runtime.phase is Phase.STOPPED:
            runtime = WorkerRuntime(self.jobs, self._registry, self.options, self, self.clock)
            self._runtime = runtime
        await runtime.start()  # concurrent calls share one start

    async def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop claiming, wait for running jobs up to ``timeout`` (``shutdown_timeout``).

        Jobs still running then are handed back to pending and reported as a
        ``ShutdownTimeoutError`` through ``job:error``. Returns within ``timeout`` plus a few
        seconds whatever the database or the handlers do; anything left behind is reported on
        ``job:error`` as a ``ShutdownStalledError``.
        """
        if self._runtime is None and self._start_task is None:
            return
        if timeout is None:
            seconds = self.options.shutdown_timeout
        else:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds + STOP_GRACE
        starting = self._start_task
        if starting is not None and not starting.done() and starting.get_loop() is loop:
            await asyncio.wait({starting}, timeout=max(end - loop.time(), 0.0))
        if self._runtime is None:
            return
        await self._runtime.stop(max(min(seconds, end - STOP_GRACE - loop.time()), 0.0))
        if not await self.drain_listeners(max(end - loop.time(), 0.0)):
            log.warning("async event listeners still running after stop(); left running")

    async def run(self, *, handle_signals: bool = True) -> None:
        """Start, run until SIGINT/SIGTERM or ``request_stop()`` (or cancellation), then stop
        gracefully.

        A second signal or ``request_stop()`` while stopping stops at once (running jobs are
        handed back). Signals are handled only in the main thread, and only while this runs.
        Raises ``LoopCrashedError`` if a worker loop kept crashing and stopped the worker.
        """
        requests = 0
        wanted = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_loop() -> None:
            nonlocal requests
            requests += 1
            if requests == 1:
                wanted.set()
            elif self._runtime is not None:
                log.warning("stopping now: running jobs are handed back")
                self._runtime.force_stop()

        def request() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(on_loop)

        self._stop_requested = request
        try:
            await self.start()
        except BaseException:
            self._stop_requested = None  # no worker to stop: a later request is a no-op
            raise
        runtime = self._runtime
        assert runtime is not None
        signals: list[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
                    signals.append(sig)
        self.emit(Events.WORKER_STARTED)
        try:
            waiters = [
                loop.create_task(wanted.wait()),
                loop.create_task(runtime.crashed.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if wanted.is_set() and runtime.runs:
                names = ", ".join(sorted({f"{r.job.name} {r.job.id}" for r in runtime.runs}))
                log.warning(
                    "stopping: waiting up to %gs for %d running job(s) (%s); "
                    "stop again to hand them back now",
                    self.options.shutdown_timeout,
                    len(runtime.runs),
                    names,
                )
        finally:
            await self.stop()
            self._stop_requested = None
            for sig in signals:
                loop.remove_signal_handler(sig)
        if runtime.failure is not None:
            raise runtime.failure

    def request_stop(self) -> None:
        """Ask a ``run()``/``run_sync()`` worker to stop gracefully; a second call stops it at
        once. Safe from any thread."""
        if self._stop_requested is not None:
            self._stop_requested()

    def run_sync(self, *, handle_signals: bool = True) -> None:
        """Run a worker in this thread until SIGINT/SIGTERM or ``request_stop()`` (twice: at
        once)."""

        asyncio.run(self.run(handle_signals=handle_signals))


def _batch_name(jobs: list[Any]) -> str:
    """The job name of an ``enqueue_many`` batch, for its span (``*`` when they differ)."""
    names = {item[0] for item in jobs if isinstance(item, tuple) and item}
    return str(next(iter(names))) if len(names) == 1 else "*"
