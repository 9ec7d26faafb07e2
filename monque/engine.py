"""``Monque``: the public engine, with an async face and a ``*_sync`` face over one core."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from pymongo.errors import PyMongoError

from monque.connection import DatabaseHandle, normalize_database
from monque.cron import check_cron, get_zone, next_run
from monque.errors import ConnectionError, UnknownJobError
from monque.events import EventEmitter, Events
from monque.job import Job, utcnow
from monque.lifecycle import new_document
from monque.options import MonqueOptions
from monque.processor import Processor
from monque.storage import JobCollection, Operation, ensure_indexes
from monque.storage import jobs as ops
from monque.validation import (
    check_name,
    check_payload,
    check_priority,
    check_unique_key,
    resolve_run_at,
)
from monque.worker import Handler, WorkerRegistry

__all__ = ["Monque"]

H = TypeVar("H", bound=Handler)
_JobOp = Operation[tuple[dict[str, Any], bool]]


class Monque(EventEmitter):
    """A MongoDB-backed job queue and cron scheduler.

    ``db`` is any handle ``normalize_database`` accepts. Options are keyword arguments (see
    ``MonqueOptions``); durations take seconds or a ``timedelta``. ``known_jobs`` (optional)
    lists the job names this app may enqueue, turning a typo into ``UnknownJobError``.

    Async apps ``await`` the methods; programs without an event loop use the ``*_sync`` twins
    (``enqueue_sync``, ``now_sync``, ``schedule_sync``, ``initialize_sync``) and ``run_sync()``,
    which need a sync handle (pymongo ``Database``/``MongoClient``, motor, mongoengine).
    """

    def __init__(
        self,
        db: object,
        *,
        database: str | None = None,
        known_jobs: Iterable[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.options = MonqueOptions.from_kwargs(**options)
        self.database: DatabaseHandle = normalize_database(db, database)
        self.jobs = JobCollection(self.database, self.options.collection)
        self.known_jobs = (
            frozenset(check_name(n) for n in known_jobs) if known_jobs is not None else None
        )
        self._registry = WorkerRegistry(self.options.worker_concurrency)
        self._processor: Processor | None = None
        self._initialized = False
        self._stop_requested: Callable[[], None] | None = None

    @property
    def instance_id(self) -> str:
        return self.options.instance_id

    @property
    def running_jobs(self) -> list[Job[Any]]:
        """Jobs this instance is running now."""
        return self._processor.running_jobs if self._processor is not None else []

    @property
    def is_running(self) -> bool:
        return self._processor is not None and self._processor.started

    # -- set-up ---------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create the indexes (unless ``create_indexes=False``). Idempotent."""
        if not self._initialized and self.options.create_indexes:
            await self.jobs.run(ensure_indexes())
        self._initialized = True

    def initialize_sync(self) -> None:
        if not self._initialized and self.options.create_indexes:
            self.jobs.run_sync(ensure_indexes())
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
        return await self._store(self._enqueue_op(name, data, unique_key, run_at, delay, priority))

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
        return self._store_sync(self._enqueue_op(name, data, unique_key, run_at, delay, priority))

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
        self._check_job_name(name)
        if unique_key is not None:
            check_unique_key(unique_key)
        check_priority(priority)
        check_payload(data, self.options.payload_limit)
        now = utcnow()
        doc = new_document(
            name,
            data,
            now=now,
            run_at=resolve_run_at(run_at, delay, now),
            unique_key=unique_key,
            priority=priority,
        )
        return ops.enqueue_unique(doc) if unique_key is not None else ops.insert_job(doc)

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
        now = utcnow()
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
        if created and self._processor is not None and job.next_run_at <= utcnow():
            self._processor.wake()
        return job

    def _store_sync(self, operation: _JobOp) -> Job[Any]:
        try:
            self.initialize_sync()
            doc, created = self.jobs.run_sync(operation)
        except PyMongoError as exc:
            raise ConnectionError(f"storing the job failed: {exc}") from exc
        return Job.from_document(doc, created=created)

    # -- consuming ------------------------------------------------------------------------

    @overload
    def worker(
        self,
        name: str,
        handler: None = None,
        *,
        concurrency: int | None = None,
        replace: bool = False,
    ) -> Callable[[H], H]: ...

    @overload
    def worker(
        self, name: str, handler: H, *, concurrency: int | None = None, replace: bool = False
    ) -> H: ...

    def worker(
        self,
        name: str,
        handler: H | None = None,
        *,
        concurrency: int | None = None,
        replace: bool = False,
    ) -> H | Callable[[H], H]:
        """Register the handler for ``name`` (``async def`` or plain ``def``); also a decorator.

        ``concurrency`` bounds how many jobs of this name run at once on this instance
        (default ``worker_concurrency``). Registering a name twice raises
        ``WorkerRegistrationError`` unless ``replace=True``.
        """
        if handler is None:

            def decorate(fn: H) -> H:
                self._registry.register(name, fn, concurrency=concurrency, replace=replace)
                return fn

            return decorate
        self._registry.register(name, handler, concurrency=concurrency, replace=replace)
        return handler

    @property
    def worker_names(self) -> list[str]:
        return [d.name for d in self._registry]

    async def start(self) -> None:
        """Initialize if needed and start processing the registered workers' jobs."""
        await self.initialize()
        if self._processor is None:
            self._processor = Processor(self.jobs, self._registry, self.options, self)
        await self._processor.start()

    async def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop claiming, wait for running jobs up to ``timeout`` (``shutdown_timeout``).

        Jobs still running then are handed back to pending and reported as a
        ``ShutdownTimeoutError`` through ``job:error``.
        """
        if self._processor is None:
            return
        if timeout is None:
            seconds = self.options.shutdown_timeout
        else:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        await self._processor.stop(seconds)
        await self.drain_listeners()

    async def run(self) -> None:
        """Start, run until ``request_stop()`` (or cancellation), then stop gracefully."""
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request() -> None:
            loop.call_soon_threadsafe(stopped.set)

        self._stop_requested = request
        await self.start()
        self.emit(Events.WORKER_STARTED)
        try:
            await stopped.wait()
        finally:
            self._stop_requested = None
            await self.stop()

    def request_stop(self) -> None:
        """Ask a ``run()``/``run_sync()`` worker to stop gracefully; safe from any thread."""
        if self._stop_requested is not None:
            self._stop_requested()

    def run_sync(self, *, handle_signals: bool = True) -> None:
        """Run a worker in this thread until SIGINT/SIGTERM or ``request_stop()``."""

        async def main() -> None:
            if handle_signals and threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_stop)
            await self.run()

        asyncio.run(main())
