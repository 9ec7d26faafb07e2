"""The worker side: claim, run handlers, write results, renew leases, sweep expired ones, stop.

One asyncio task claims (woken by the change stream, a next-due timer, a freed slot or the
poll interval); each claimed job runs in its own task (sync handlers on a dedicated thread
pool, never on the event loop); finished jobs' results are written in batches; a heartbeat
task renews the leases of running jobs and a recovery task returns expired leases to pending,
counting the lost run as an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from monque.errors import (
    ConnectionError,
    InstanceIdConflictError,
    InvalidJobDocumentError,
    JobTimeoutError,
    ShutdownStalledError,
    ShutdownTimeoutError,
)
from monque.events import EventEmitter, Events
from monque.job import Job, JobStatus, utcnow
from monque.lifecycle import Outcome, completion_update, expiry, failure_update
from monque.options import MonqueOptions
from monque.storage import instances
from monque.storage import jobs as ops
from monque.storage.calls import JobCollection
from monque.wakeups import ChangeWatcher, DueTimer
from monque.worker import WorkerDefinition, WorkerRegistry
from monque.writer import TransitionWriter

__all__ = ["Processor"]

log = logging.getLogger("monque.processor")

_RECOVERY_BATCH = 100
_CLAIM_BATCH = 100
_CLAIM_RACES = 5
_SETTLE_WAIT = 1.0
_MAX_ERROR_BACKOFF = 30.0
# How long stop() may take beyond its timeout to hand jobs back and end its tasks.
STOP_GRACE = 2.0


@dataclass
class _Running:
    job: Job[Any]
    definition: WorkerDefinition
    task: asyncio.Task[None]
    abandoned: bool = False  # lost or handed back: write nothing
    cancelled: bool = False  # cancel_job asked for it: write `cancelled`


class Processor:
    def __init__(
        self,
        collection: JobCollection,
        registry: WorkerRegistry,
        options: MonqueOptions,
        events: EventEmitter,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._coll = collection
        self._instances = JobCollection(collection.database, f"{options.collection}_instances")
        self._registry = registry
        self._options = options
        self._events = events
        self._clock = clock
        self._running: dict[ObjectId, _Running] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._writer: TransitionWriter | None = None
        self._watcher: ChangeWatcher | None = None
        self._timer: DueTimer | None = None
        self._drained = True
        self.started = False

    @property
    def running_jobs(self) -> list[Job[Any]]:
        return [r.job for r in self._running.values()]

    def wake(self) -> None:
        """Look for work now instead of at the next poll (a job became due, a slot freed)."""
        self._wake.set()

    def wake_at(self, when: datetime) -> None:
        """Look for work when a job this instance just stored becomes due (before the poll)."""
        if self.started and self._timer is not None:
            self._timer.arm(when)

    @property
    def streaming(self) -> bool:
        """True while a healthy change stream wakes this worker."""
        return self._watcher is not None and self._watcher.healthy

    async def start(self) -> None:
        if self.started:
            return
        owner = self._options.instance_id
        if self._options.create_indexes:
            await self._instances.run(instances.ensure_index())
        if not await self._instances.run(
            instances.register(owner, self._clock(), self._options.lock_timeout)
        ):
            raise InstanceIdConflictError(
                f"instance_id {owner!r} is held by a live instance; give each worker its own id"
            )
        self.started = True
        self._stop_event.clear()
        size = self._options.instance_concurrency or max(self._registry.total_concurrency, 1)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="monque-handler")
        self._writer = TransitionWriter(self._coll, owner, self._write_failed)
        self._timer = DueTimer(self._wake.set, self._clock)
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="monque-poll"),
            asyncio.create_task(self._writer.run(), name="monque-writer"),
            asyncio.create_task(
                self._every(self._options.heartbeat_interval, self._heartbeat),
                name="monque-heartbeat",
            ),
            asyncio.create_task(
                self._every(self._options.recovery_interval, self._recover), name="monque-recovery"
            ),
        ]
        if self._options.change_streams:
            self._watcher = ChangeWatcher(
                self._coll,
                self._on_change,
                self._on_stream_state,
                self._options.stream_poll_interval,
            )
            self._tasks.append(asyncio.create_task(self._watcher.run(), name="monque-stream"))

    async def stop(self, timeout: float) -> None:
        """Stop claiming now; wait up to ``timeout`` for running jobs, then hand them back.

        Returns within ``timeout`` plus ``STOP_GRACE`` whatever the database or the tasks do:
        every wait here is bounded, and what did not finish is reported on ``job:error``.
        """
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stop_event.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.stop()
        poll = self._tasks[0]
        await self._settle([poll], max(deadline - loop.time(), 0.0) + STOP_GRACE, "claim loop")
        running = list(self._running.values())
        if running:
            wait = max(deadline - loop.time(), 0.0)
            _, pending = await asyncio.wait([r.task for r in running], timeout=wait)
            if pending:
                grace_end = loop.time() + STOP_GRACE
                await self._hand_back([r for r in running if r.task in pending], timeout, grace_end)
        grace_end = loop.time() + STOP_GRACE
        for task in self._tasks[1:]:
            task.cancel()
        await self._settle(self._tasks, grace_end - loop.time(), "background task")
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
        self._watcher = None
        if self._executor is not None:
            # Threads of timed-out sync handlers cannot be interrupted; don't wait for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        try:
            await asyncio.wait_for(
                self._instances.run(instances.unregister(self._options.instance_id)),
                max(grace_end - loop.time(), 0.1),
            )
        except (PyMongoError, asyncio.TimeoutError) as exc:  # its lease runs out instead
            self._error(ConnectionError(f"unregistering the instance failed: {exc!r}"), None)
        self.started = False

    async def _settle(self, tasks: list[asyncio.Task[None]], seconds: float, what: str) -> None:
        """Wait up to ``seconds`` for ``tasks``; cancel and report any still running then."""
        tasks = [t for t in tasks if not t.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(seconds, 0.0))
        for task in pending:
            task.cancel()
            self._error(
                ShutdownStalledError(f"{what} {task.get_name()!r} did not stop in time; left"),
                None,
            )

    async def _hand_back(self, stuck: list[_Running], timeout: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        for entry in stuck:
            self._abandon(entry)
            entry.task.cancel()  # a sync handler's thread runs on; its result is discarded
        ids = [entry.job.id for entry in stuck]
        try:
            await asyncio.wait_for(
                self._coll.run(ops.release(ids, self._options.instance_id, self._clock())),
                max(until - loop.time(), 0.1),
            )
        except (PyMongoError, asyncio.TimeoutError) as exc:
            # The leases expire and the recovery sweep of any instance takes them back.
            self._error(ConnectionError(f"could not hand back jobs at shutdown: {exc!r}"), None)
        await self._settle([e.task for e in stuck], until - loop.time(), "job")
        self._error(ShutdownTimeoutError(timeout, ids), None)

    # -- polling and claiming -------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while not self._stop_event.is_set():
            self._wake.clear()
            try:
                await self._fill_slots()
                failures = 0
            except PyMongoError as exc:
                failures += 1
                self._error(ConnectionError(f"claiming jobs failed: {exc}"), None)
            if failures:
                delay = min(
                    self._options.poll_interval * 2 ** min(failures, 10), _MAX_ERROR_BACKOFF
                )
                await _wait(self._stop_event, delay)
            elif self.streaming:
                await _wait(self._wake, self._options.stream_poll_interval)
            else:
                await _wait(self._wake, self._options.poll_interval)

    async def _fill_slots(self) -> None:
        """Claim for every free slot; when due jobs run out, arm the timer for the next one."""
        cap = self._options.instance_concurrency
        if self._writer is not None:
            # Results being written free their slots in a moment: claim for them together
            # (one batch) rather than for each as it frees (batches of one).
            await self._writer.settled(_SETTLE_WAIT)
        races = 0
        # After the queue ran dry, a wake-up is most likely one new job: take it in one
        # round trip, and batch only once more are due. Under load, batch straight away.
        single = self._drained
        while not self._stop_event.is_set():
            limit = _CLAIM_BATCH if cap is None else min(cap - len(self._running), _CLAIM_BATCH)
            if single:
                limit, single = min(limit, 1), False
            slots = self._registry.free_slots()
            if not slots or limit < 1:
                return
            docs, exhausted = await self._coll.run(
                ops.claim_batch(
                    slots,
                    limit,
                    self._options.instance_id,
                    self._clock(),
                    self._options.lock_timeout,
                )
            )
            for doc in docs:
                await self._launch(doc)
            self._drained = exhausted
            if exhausted:
                await self._arm_next_due(list(slots))
                return
            # Nothing taken but more was due: other workers won those jobs; read again.
            races = 0 if docs else races + 1
            if races > _CLAIM_RACES:
                return

    async def _arm_next_due(self, names: list[str]) -> None:
        # Only with a change stream: it reports every job stored later, so one read after
        # each poll keeps the timer right. Polling alone finds delayed jobs by polling.
        if self.streaming and self._timer is not None:
            due = await self._coll.run(ops.next_due(names))
            # A job due already appeared after the claim read: its change event wakes us.
            if due is not None and due > self._clock():
                self._timer.arm(due)

    def _on_change(self, name: str | None, due: datetime | None) -> None:
        if self._stop_event.is_set() or self._timer is None:
            return
        if name is not None and name not in self._registry:
            return
        if due is None:
            self._wake.set()
        else:
            self._timer.arm(due)

    def _on_stream_state(self, healthy: bool, error: BaseException | None) -> None:
        # Either way the poll loop looks now: for what was stored while the stream was down,
        # or to switch to the shorter poll interval at once.
        self._wake.set()
        if healthy:
            self._events.emit(Events.CHANGE_STREAM_OPEN)
        else:
            log.info(
                "change stream unavailable, polling every %ss: %s",
                self._options.poll_interval,
                error,
            )
            self._events.emit(Events.POLLING_FALLBACK, error)

    async def _launch(self, doc: dict[str, Any]) -> None:
        try:
            job = Job.from_document(doc)
        except InvalidJobDocumentError as exc:
            await self._reject(doc, exc)
            return
        definition = self._registry.get(job.name)
        if definition is None:  # pragma: no cover - only registered names are claimed
            return
        definition.running += 1
        task = asyncio.create_task(self._execute(job, definition), name=f"monque-job-{job.id}")
        self._running[job.id] = _Running(job, definition, task)

    async def _reject(self, doc: dict[str, Any], exc: InvalidJobDocumentError) -> None:
        """A malformed document was claimed: report it, park it as failed, keep running."""
        log.warning("skipping malformed job document %r: %s", doc.get("_id"), exc)
        now = self._clock()
        update = {
            "$set": {
                "status": JobStatus.FAILED.value,
                "failReason": f"invalid job document: {exc}",
                "updatedAt": now,
            },
            "$unset": ops.LEASE_FIELDS,
        }
        await self._coll.run(ops.transition(doc["_id"], self._options.instance_id, update))
        self._error(exc, None)

    # -- running a job --------------------------------------------------------------------

    async def _execute(self, job: Job[Any], definition: WorkerDefinition) -> None:
        entry_id = job.id
        job._attach(self._report_progress, asyncio.get_running_loop())
        self._events.emit(Events.JOB_START, job)
        started = time.perf_counter()
        try:
            await self._call_handler(job, definition)
        except asyncio.CancelledError:
            entry = self._running.get(entry_id)
            if entry is not None and entry.cancelled and not entry.abandoned:
                await self._on_cancelled(job)
                return
            if self._is_abandoned(entry_id):
                return  # lost or handed back: the new owner's state stands
            raise
        except Exception as exc:
            if self._cancel_requested(entry_id):
                await self._on_cancelled(job)
            elif not self._is_abandoned(entry_id):
                await self._on_failure(job, exc, definition)
        else:
            if self._cancel_requested(entry_id):
                await self._on_cancelled(job)
            elif not self._is_abandoned(entry_id):
                await self._on_success(job, time.perf_counter() - started)
        finally:
            job._detach()
            self._running.pop(entry_id, None)
            definition.running -= 1
            self._wake.set()

    async def _call_handler(self, job: Job[Any], definition: WorkerDefinition) -> None:
        if definition.is_async:
            call: Any = definition.handler(job)
        else:
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()
            call = loop.run_in_executor(self._executor, context.run, definition.handler, job)
        if definition.timeout is None:
            await call
            return
        try:
            await asyncio.wait_for(call, definition.timeout)
        except asyncio.TimeoutError:
            # An async handler was cancelled; a sync one runs on, told through should_stop.
            job._stop_flag.set()
            raise JobTimeoutError(
                f"{job.name} ran past its timeout of {definition.timeout:g}s"
            ) from None

    async def _on_success(self, job: Job[Any], duration: float) -> None:
        outcome = completion_update(job, self._clock(), self._options.retention)
        if await self._write(job, outcome):
            self._events.emit(Events.JOB_COMPLETE, job, duration)

    async def _on_failure(
        self, job: Job[Any], exc: BaseException, definition: WorkerDefinition
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        policy = definition.policy or self._options.retry_policy
        outcome = failure_update(
            job,
            self._clock(),
            reason,
            policy,
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            permanent=not policy.retries(exc),
            retention=self._options.retention,
        )
        if await self._write(job, outcome):
            self._events.emit(Events.JOB_FAIL, job, exc, outcome.will_retry)

    async def _on_cancelled(self, job: Job[Any]) -> None:
        now = self._clock()
        outcome = Outcome(
            {
                "$set": {
                    "status": JobStatus.CANCELLED.value,
                    "cancelledAt": now,
                    "updatedAt": now,
                    **expiry(JobStatus.CANCELLED.value, now, self._options.retention),
                },
                "$unset": {**ops.LEASE_FIELDS, "cancelRequested": ""},
            },
            will_retry=False,
            next_run_at=None,
        )
        if await self._write(job, outcome):
            self._events.emit(Events.JOB_CANCELLED, job)

    async def _report_progress(self, job: Job[Any], value: float, message: str | None) -> None:
        progress = {"value": value, "message": message, "at": self._clock()}
        update = {"$set": {"progress": progress}}
        if await self._coll.run(ops.transition(job.id, self._options.instance_id, update)):
            self._events.emit(Events.JOB_PROGRESS, job, value, message)

    async def _write(self, job: Job[Any], outcome: Outcome) -> bool:
        """Apply a transition (batched with other finished jobs, retried through outages);
        False if the job was lost meanwhile."""
        assert self._writer is not None
        job_id = job.id
        held = await self._writer.write(
            job_id, outcome.update, lambda: not self._is_abandoned(job_id)
        )
        if not held:
            if not self._is_abandoned(job_id):
                self._mark_lost(job)
            return False
        _apply(job, outcome.update)
        return True

    def _write_failed(self, exc: PyMongoError, ids: list[ObjectId]) -> None:
        for job_id in ids:
            entry = self._running.get(job_id)
            self._error(
                ConnectionError(f"recording the result of job {job_id} failed: {exc}"),
                entry.job if entry is not None else None,
            )

    # -- leases ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        now = self._clock()
        owner, lease = self._options.instance_id, self._options.lock_timeout
        await self._instances.run(instances.renew(owner, now, lease))
        if not self._running:
            return
        lost, cancel = await self._coll.run(
            ops.renew_leases(list(self._running), owner, now, lease)
        )
        for job_id in lost:
            entry = self._running.get(job_id)
            if entry is not None and not entry.abandoned:
                self._abandon(entry)
                self._mark_lost(entry.job)
        for job_id in cancel:
            entry = self._running.get(job_id)
            if entry is not None and not entry.cancelled:
                entry.cancelled = True
                _interrupt(entry)

    def _cancel_requested(self, job_id: ObjectId) -> bool:
        entry = self._running.get(job_id)
        return entry is not None and entry.cancelled and not entry.abandoned

    async def _recover(self) -> None:
        now = self._clock()
        for doc in await self._coll.run(ops.find_expired(now, _RECOVERY_BATCH)):
            try:
                job = Job.from_document(doc)
            except InvalidJobDocumentError as exc:
                self._error(exc, None)
                continue
            reason = f"worker lost: lease of {job.claimed_by!r} expired"
            outcome = failure_update(
                job,
                now,
                reason,
                self._options.retry_policy,
                immediate=True,
                retention=self._options.retention,
            )
            recovered = await self._coll.run(
                ops.recover(job.id, job.claimed_by, now, outcome.update)
            )
            if recovered:
                _apply(job, outcome.update)
                self._events.emit(Events.JOB_RECOVERED, job)
                self._wake.set()

    def _abandon(self, entry: _Running) -> None:
        entry.abandoned = True
        _interrupt(entry)

    def _is_abandoned(self, job_id: ObjectId) -> bool:
        entry = self._running.get(job_id)
        return entry is None or entry.abandoned

    def _mark_lost(self, job: Job[Any]) -> None:
        job._stop_flag.set()
        self._events.emit(Events.JOB_LOST, job)

    # -- helpers ---------------------------------------------------------------------------

    async def _every(self, interval: float, action: Callable[[], Any]) -> None:
        while not self._stop_event.is_set():
            await _wait(self._stop_event, interval)
            if self._stop_event.is_set():
                return
            try:
                await action()
            except PyMongoError as exc:
                self._error(ConnectionError(f"{action.__name__.strip('_')} failed: {exc}"), None)
            except Exception as exc:  # a bug must not end the loop that keeps leases alive
                log.exception("%s failed", action.__name__)
                self._error(exc, None)

    def _error(self, error: BaseException, job: Job[Any] | None) -> None:
        if not self._events.emit(Events.JOB_ERROR, error, job):
            log.warning("monque error: %s", error)


def _interrupt(entry: _Running) -> None:
    """Cancel an async handler; tell a sync one through ``job.should_stop``."""
    entry.job._stop_flag.set()
    if entry.definition.is_async:
        entry.task.cancel()


def _apply(job: Job[Any], update: dict[str, Any]) -> None:
    """Mirror a written update on the in-memory job handed to listeners."""
    fields = update.get("$set", {})
    if "status" in fields:
        job.status = JobStatus(fields["status"])
    job.fail_count = fields.get("failCount", job.fail_count)
    job.fail_reason = fields.get("failReason", job.fail_reason)
    job.next_run_at = fields.get("nextRunAt", job.next_run_at)
    job.completed_at = fields.get("completedAt", job.completed_at)
    job.updated_at = fields.get("updatedAt", job.updated_at)
    if update.get("$unset"):
        job.locked_at = job.claimed_by = job.last_heartbeat = job.lock_expires_at = None


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
