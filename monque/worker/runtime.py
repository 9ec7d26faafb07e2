"""The worker runtime: start the supervised loops, run claimed jobs, settle their outcomes, stop.

Each claimed job becomes a ``Run`` (its claim token, its state) executed by a task of its own;
the claimer, the outcome writer, the heartbeat, the cancel check, the recovery sweep and the
change-stream follower run under one ``Supervisor``. See ``docs/runtime.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import datetime
from enum import Enum
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from monque import tracing
from monque.clock import ServerClock
from monque.errors import (
    ConnectionError,
    HandlerCancelledError,
    InstanceIdConflictError,
    InvalidJobDocumentError,
    JobTimeoutError,
    OutcomeNotStoredError,
    ShutdownStalledError,
    ShutdownTimeoutError,
    brief,
)
from monque.events import EventEmitter, Events
from monque.job import Job, JobStatus
from monque.lifecycle import (
    Outcome,
    cancelled_update,
    completion_update,
    describe_error,
    failure_update,
    parked_update,
)
from monque.options import MonqueOptions
from monque.storage import instances
from monque.storage import jobs as ops
from monque.storage.calls import JobCollection
from monque.worker import joblog
from monque.worker.claimer import Claimer
from monque.worker.handlers import start_handler
from monque.worker.leases import LeaseKeeper, apply_update
from monque.worker.registry import WorkerRegistry
from monque.worker.run import Run, RunState
from monque.worker.supervisor import LoopCrashedError, Supervisor
from monque.worker.wakeups import ChangeWatcher, DueTimer
from monque.worker.writer import OutcomeWriter

__all__ = ["STOP_GRACE", "Phase", "WorkerRuntime"]

log = logging.getLogger("monque.worker")

# How long stop() may take beyond its timeout to hand jobs back and end its loops.
STOP_GRACE = 2.0


# The writer stored a minimal failure instead of the run's own outcome.
SUBSTITUTED = "substituted"


class Phase(Enum):
    NEW = "new"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


class WorkerRuntime:
    """One start-to-stop life of a worker; the engine makes a new one for every ``start()``,
    so every loop-bound object belongs to the loop that started it."""

    def __init__(
        self,
        collection: JobCollection,
        registry: WorkerRegistry,
        options: MonqueOptions,
        events: EventEmitter,
        clock: ServerClock,
    ) -> None:
        self.coll = collection
        self.instances = JobCollection(collection.database, f"{options.collection}_instances")
        self.registry = registry
        self.options = options
        self.events = events
        self.clock = clock
        self.runs: set[Run] = set()
        self.started = False  # the loops run (STARTED and, until they end, STOPPING)
        self.phase = Phase.NEW
        self.failure: LoopCrashedError | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._stop_task: asyncio.Task[None] | None = None
        self._watcher: ChangeWatcher | None = None

    # -- from any thread or loop -------------------------------------------------------------

    def _call_on_loop(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            same = asyncio.get_running_loop() is loop
        except RuntimeError:
            same = False
        if same:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to wake
                loop.call_soon_threadsafe(fn, *args)

    def wake(self) -> None:
        """Look for work now instead of at the next poll: a job of any name may be due."""
        if self.started:
            self._call_on_loop(self._stir, None)

    def _stir(self, name: str | None) -> None:
        if self.started:
            self.claimer.stir(name)
            self.wake_event.set()

    def wake_at(self, when: datetime) -> None:
        """Look for work when a job this instance just stored becomes due (before the poll)."""
        if self.started:
            self._call_on_loop(self._arm, when)

    def force_stop(self) -> None:
        """Stop waiting for running jobs: a stop in progress hands them back at once."""
        if self.started:
            self._call_on_loop(self.force.set)

    def _arm(self, when: datetime) -> None:
        if self.started and not self.stopping.is_set():
            self.timer.arm(when)

    @property
    def streaming(self) -> bool:
        """True while a healthy change stream wakes this worker."""
        return self._watcher is not None and self._watcher.healthy

    @property
    def running_jobs(self) -> list[Job[Any]]:
        return [run.job for run in self.runs]

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loops; concurrent calls share one start. Raises what made it fail."""
        if self.phase is Phase.NEW:
            self.phase = Phase.STARTING
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        if self._start_task is not None:
            await asyncio.shield(self._start_task)

    async def _start(self) -> None:
        try:
            await self._open()
        except BaseException:
            self.phase = Phase.STOPPED
            raise
        if self.phase is Phase.STARTING:
            self.phase = Phase.STARTED

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.wake_event = asyncio.Event()
        self.cancel_hint = asyncio.Event()
        self.outage = joblog.Outage()
        self._stream_down = False
        self.unranked = False  # pending jobs stored without a priority may wait
        self.force = asyncio.Event()
        self.crashed = asyncio.Event()
        self.leases = LeaseKeeper(self)
        owner = self.options.instance_id
        await self.leases.measure_clock()
        if self.options.create_indexes:
            await self.instances.run(instances.ensure_index())
        if not await self.instances.run(
            instances.register(owner, self.clock.now(), self.options.lock_timeout)
        ):
            raise InstanceIdConflictError(
                f"instance_id {owner!r} is held by a live instance; give each worker its own id"
            )
        self.started = True
        self.writer = OutcomeWriter(self.coll, owner, self._write_failed)
        self.timer = DueTimer(lambda: self._stir(None), self.clock.now)
        # Jobs stored without a priority may wait: rank them 0 before the first claim.
        self.unranked = True
        self.supervisor = Supervisor(self.report, self._fatal)
        self.claimer = Claimer(self)
        self.supervisor.spawn("claimer", self.claimer.run)
        self.supervisor.spawn("writer", self.writer.run)
        self.supervisor.spawn("heartbeat", self.leases.heartbeat_loop)
        self.supervisor.spawn("cancel-check", self.leases.cancel_loop)
        self.supervisor.spawn("recovery", self.leases.recovery_loop)
        if self.options.change_streams:
            self._watcher = ChangeWatcher(
                self.coll,
                self._on_change,
                self._on_stream_state,
                self.options.stream_poll_interval,
                on_cancel=self._on_cancel_request,
                on_unranked=self._on_unranked,
            )
            self.supervisor.spawn("change-stream", self._watcher.run)

    async def stop(self, timeout: float) -> None:
        """Stop claiming now; wait up to ``timeout`` for running jobs, then hand them back.

        Returns within ``timeout`` plus ``STOP_GRACE`` whatever the database or the handlers
        do: every wait is bounded, and what did not end is reported on ``job:error``.
        Concurrent calls share one stop; each returns within its own bound. A stop during
        ``start()`` waits for the start (within that bound), then stops.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout + STOP_GRACE
        if self.phase is Phase.STARTING and self._start_task is not None:
            await asyncio.wait({self._start_task}, timeout=max(end - loop.time(), 0.0))
            if not self._start_task.done():
                self._start_task.cancel()
                self.report(ShutdownStalledError("start() did not finish in time; cancelled"))
                return
        if self._stop_task is None:
            if self.phase is not Phase.STARTED:
                return  # never started, or its start failed
            self.phase = Phase.STOPPING
            self._stop_task = loop.create_task(self._stop(timeout))
            await asyncio.shield(self._stop_task)  # bounded by its own end
            return
        await asyncio.wait({self._stop_task}, timeout=max(end - loop.time(), 0.0))

    async def wait_stopped(self) -> None:
        """Wait until a stop in progress has finished."""
        if self._stop_task is not None:
            await asyncio.wait({self._stop_task})

    async def _stop(self, timeout: float) -> None:
        try:
            await self._close(timeout)
        finally:
            self.started = False
            self.phase = Phase.STOPPED

    async def _close(self, timeout: float) -> None:
        # One deadline for the handlers and one end for everything: no phase gets a grace
        # of its own.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        end = deadline + STOP_GRACE
        self.stopping.set()
        self.wake_event.set()
        self.supervisor.stop()
        if self._watcher is not None:
            self._watcher.stop()
        claimer = self.supervisor.tasks["claimer"]
        await self._settle([claimer], end - loop.time(), "claim loop")
        runs = list(self.runs)
        if runs:
            await self._wait_for_runs(runs, deadline)
            # Forced, or the handlers are done early: what is left gets the grace at most.
            end = min(end, loop.time() + STOP_GRACE)
            stuck = [run for run in runs if run.task is not None and not run.task.done()]
            if stuck:
                await self._hand_back(stuck, timeout, end)
        # The heartbeat and the cancel check ran until now: the handlers' leases stayed alive
        # and cancel requests reached them while stop() waited.
        loops = [task for name, task in self.supervisor.tasks.items() if name != "claimer"]
        for task in loops:
            task.cancel()
        await self._settle(loops, end - loop.time(), "worker loop")
        await self._settle(list(self._side_tasks), end - loop.time(), "outcome write")
        self.timer.cancel()
        try:
            await asyncio.wait_for(
                self.instances.run(instances.unregister(self.options.instance_id)),
                max(end - loop.time(), 0.0),
            )
        except (PyMongoError, asyncio.TimeoutError) as exc:  # its lease runs out instead
            self.report(ConnectionError(f"unregistering the instance failed: {brief(exc)}"))

    async def _wait_for_runs(self, runs: list[Run], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        tasks = {run.task for run in runs if run.task is not None}
        forced = loop.create_task(self.force.wait())
        try:
            while tasks and not self.force.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    return
                done, _ = await asyncio.wait(
                    [*tasks, forced], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                tasks -= done
        finally:
            forced.cancel()

    async def _settle(self, tasks: list[asyncio.Task[Any]], seconds: float, what: str) -> None:
        """Wait up to ``seconds`` for ``tasks``; cancel and report any still running then."""
        tasks = [t for t in tasks if not t.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(seconds, 0.0))
        for task in pending:
            task.cancel()
            self.report(
                ShutdownStalledError(f"{what} {task.get_name()!r} did not end in time; left")
            )

    async def _hand_back(self, stuck: list[Run], timeout: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        held = [run for run in stuck if run.state.holds_claim or run.writing]
        for run in stuck:
            run.state = RunState.ABANDONED
            run.interrupt()  # a sync handler's thread runs on; its result is discarded
        if held:
            owner, now = self.options.instance_id, self.clock.now()
            try:
                await asyncio.wait_for(
                    self.coll.run(ops.release([r.key for r in held], owner, now)),
                    max(until - loop.time(), 0.0),
                )
            except (PyMongoError, asyncio.TimeoutError) as exc:
                # The leases expire and the recovery sweep of any instance takes them back.
                self.report(ConnectionError(f"could not hand back jobs at shutdown: {brief(exc)}"))
        for run in stuck:
            if not run.definition.is_async and run.handler is not None:
                run.handler.cancel()  # a thread cannot be stopped: stop waiting for it
        tasks = [run.task for run in stuck if run.task is not None]
        await self._settle(tasks, until - loop.time(), "job")
        if held:
            ids = [run.job.id for run in held]
            self.report(ShutdownTimeoutError(timeout, ids, forced=self.force.is_set()))
        for run in stuck:
            if run not in held:  # its outcome (timed out, cancelled) was written already
                log.warning(
                    "the handler of job %s (%s) had not returned at shutdown; left",
                    run.job.id,
                    run.name,
                )

    def _fatal(self, error: LoopCrashedError) -> None:
        log.critical("the worker stops: %s", error)
        self.failure = error
        self.crashed.set()
        if self._stop_task is None and self.phase is Phase.STARTED:
            self.phase = Phase.STOPPING
            loop = asyncio.get_running_loop()
            self._stop_task = loop.create_task(self._stop(self.options.shutdown_timeout))

    # -- running a job ----------------------------------------------------------------------

    async def launch(self, doc: dict[str, Any]) -> None:
        try:
            job = Job.from_document(doc)
        except InvalidJobDocumentError as exc:
            await self._reject(doc, exc)
            return
        definition = self.registry.get(job.name)
        token = doc.get("claimToken")
        if definition is None:  # pragma: no cover - only registered names are claimed
            owner = self.options.instance_id
            await self.coll.run(ops.release([(job.id, token)], owner, self.clock.now()))
            return
        run = Run(job, definition, token)
        self.registry.acquire(job.name)
        self.runs.add(run)
        run.task = asyncio.create_task(self._execute(run), name=f"monque-run-{job.id}")

    async def _reject(self, doc: dict[str, Any], exc: InvalidJobDocumentError) -> None:
        """A malformed document was claimed: report it, park it as failed, keep running."""
        log.warning("skipping malformed job document %r: %s", doc.get("_id"), exc)
        now = self.clock.now()
        update = {
            "$set": {
                "status": JobStatus.FAILED.value,
                "failReason": f"invalid job document: {exc}",
                "updatedAt": now,
            },
            "$unset": ops.LEASE_FIELDS,
        }
        await self.coll.run(
            ops.transition(doc["_id"], self.options.instance_id, doc.get("claimToken"), update)
        )
        self.report(exc)

    async def _execute(self, run: Run) -> None:
        job = run.job
        job._attach(lambda j, v, m: self._report_progress(run, v, m), asyncio.get_running_loop())
        self.events.emit(Events.JOB_START, job)
        joblog.started(job)
        error: BaseException | None = None
        try:
            # The handler's task or thread starts inside the span: its own spans are children.
            with tracing.run_span(job, job.trace_context) as span:
                try:
                    run.handler = start_handler(run.definition, job)
                except Exception as exc:  # calling the handler raised before it ran
                    error = exc
                else:
                    error = await self._await_handler(run)
                if run.state is RunState.RUNNING:
                    run.state = RunState.FINISHING
                    try:
                        if error is None:
                            await self._succeeded(run)
                        else:
                            await self._failed(run, error)
                    except Exception as exc:  # a bug: reported, the lease left to recovery
                        log.exception("settling the run of job %s failed", job.id)
                        run.state = RunState.ABANDONED
                        self.report(exc, job)
                outcome = "failed" if error is not None else "completed"
                if run.state is not RunState.DONE:
                    outcome = run.state.value
                tracing.finish(span, outcome, error)
        finally:
            job._detach()
            self.registry.release(job.name)
            self.runs.discard(run)
            if self.started:
                self.wake_event.set()  # a slot freed: claim for it

    async def _await_handler(self, run: Run) -> BaseException | None:
        handler = run.handler
        assert handler is not None
        timeout = run.definition.timeout
        done, _ = await asyncio.wait({handler}, timeout=timeout)
        if not done:
            if run.leave(RunState.TIMED_OUT):
                run.interrupt()
                error = JobTimeoutError(f"{run.name} ran past its timeout of {timeout:g}s")
                await self._failed(run, error)
            # The slot stays taken until the handler really returns.
            await asyncio.wait({handler})
        if handler.cancelled():
            if run.interrupted:
                return None  # Monque asked for it; the state says what happens next
            return HandlerCancelledError(
                "the handler raised CancelledError, but Monque did not cancel it "
                "(a cancelled library future or task scope?)"
            )
        return handler.exception()

    async def _succeeded(self, run: Run) -> None:
        job = run.job
        try:
            outcome = completion_update(job, self.clock.now(), self.options.retention)
        except Exception as exc:  # its schedule cannot be evaluated here
            await self._park(run, exc)
            return
        # A one-off job that did its work is completed even if a cancel came too late; a
        # recurring job with a cancel request stops its schedule instead.
        cancel_wins = job.repeat_interval is not None
        if await self._write(run, outcome, cancel_wins=cancel_wins):
            seconds = time_since(run)
            self.events.emit(Events.JOB_COMPLETE, job, seconds)
            joblog.completed(job, seconds)

    async def _failed(self, run: Run, error: BaseException) -> None:
        job = run.job
        reason, trace = describe_error(error)
        policy = run.definition.policy or self.options.retry_policy
        try:
            outcome = failure_update(
                job,
                self.clock.now(),
                reason,
                policy,
                traceback=trace,
                permanent=not policy.retries(error),
                retention=self.options.retention,
            )
        except Exception as exc:  # its schedule cannot be evaluated here
            await self._park(run, exc)
            return
        if await self._write(run, outcome):
            self.events.emit(Events.JOB_FAIL, job, error, outcome.will_retry)
            joblog.failed(job, error, outcome.will_retry, time_since(run))

    async def _park(self, run: Run, error: Exception) -> None:
        """The run's own document cannot be evaluated: fail the job for good and report it."""
        reason = f"invalid job document: {error!r}"
        self.report(InvalidJobDocumentError(reason, run.job.id), run.job)
        outcome = parked_update(self.clock.now(), reason, self.options.retention)
        if await self._write(run, outcome, cancel_wins=False):
            self.events.emit(Events.JOB_FAIL, run.job, error, False)
            joblog.failed(run.job, error, False, time_since(run))

    def cancel(self, run: Run) -> None:
        """A cancel request reached a running job: it ends cancelled now, its handler is told.
        (A finishing run's outcome write sees the request itself.)"""
        if run.state is RunState.RUNNING:
            run.state = RunState.CANCELLED
            run.interrupt()
            self._side(self._write_cancelled(run))

    async def _write_cancelled(self, run: Run) -> None:
        outcome = cancelled_update(self.clock.now(), self.options.retention)
        if await self._write(run, outcome, cancel_wins=False):
            self.events.emit(Events.JOB_CANCELLED, run.job)
            joblog.cancelled(run.job)

    def lose(self, run: Run) -> None:
        """This instance no longer holds the run's claim: stop the handler, write nothing."""
        if run.state is not RunState.ABANDONED:
            run.state = RunState.ABANDONED
            run.interrupt()
            self.events.emit(Events.JOB_LOST, run.job)
            joblog.lost(run.job)

    async def _write(self, run: Run, outcome: Outcome, *, cancel_wins: bool = True) -> bool:
        """Write a run's outcome (batched, retried through outages); True once applied."""
        item = ops.OutcomeWrite(run.job.id, run.token, outcome.update, cancel_wins)
        run.writing = True
        try:
            result = await self._write_storable(run, item)
        finally:
            run.writing = False
        if result == ops.APPLIED:
            apply_update(run.job, outcome.update)
            if run.state is RunState.FINISHING:
                run.state = RunState.DONE
            return True
        if result == SUBSTITUTED:
            return False
        if result == ops.CANCEL:  # held, but a cancellation was requested meanwhile
            run.state = RunState.CANCELLED
            run.interrupt()
            await self._write_cancelled(run)
            return False
        self.lose(run)
        return False

    async def _write_storable(self, run: Run, item: ops.OutcomeWrite) -> str:
        def wanted() -> bool:
            return run.state is not RunState.ABANDONED

        try:
            return await self.writer.write(item, wanted)
        except Exception as exc:
            self.report(OutcomeNotStoredError(f"the outcome of job {run.job.id}: {exc!r}"), run.job)
        # Last resort: record that much, so the job neither stays processing nor runs again
        # without a trace. If even this cannot be stored, the lease runs out and recovery
        # takes the job back.
        now = self.clock.now()
        minimal = failure_update(
            run.job,
            now,
            "the outcome of this run could not be stored",
            run.definition.policy or self.options.retry_policy,
            retention=self.options.retention,
        )
        try:
            result = await self.writer.write(item._replace(update=minimal.update), wanted)
        except Exception as exc:
            self.report(OutcomeNotStoredError(f"job {run.job.id}: {exc!r}"), run.job)
            run.state = RunState.ABANDONED
            return ops.LOST
        if result == ops.APPLIED:  # not the outcome the caller wrote: it must not announce it
            apply_update(run.job, minimal.update)
            if run.state is RunState.FINISHING:
                run.state = RunState.DONE
            self.events.emit(
                Events.JOB_FAIL,
                run.job,
                OutcomeNotStoredError("the outcome of this run could not be stored"),
                minimal.will_retry,
            )
            return SUBSTITUTED
        return result

    async def _report_progress(self, run: Run, value: float, message: str | None) -> None:
        progress = {"value": value, "message": message, "at": self.clock.now()}
        update = {"$set": {"progress": progress}}
        owner = self.options.instance_id
        if await self.coll.run(ops.transition(run.job.id, owner, run.token, update)):
            self.events.emit(Events.JOB_PROGRESS, run.job, value, message)

    def _write_failed(self, exc: PyMongoError, items: list[ops.OutcomeWrite]) -> None:
        jobs = {run.job.id: run.job for run in self.runs}
        for item in items:
            self.report(
                ConnectionError(f"recording the result of job {item.job_id} failed: {brief(exc)}"),
                jobs.get(item.job_id),
            )

    # -- wake-ups from the change stream ----------------------------------------------------

    def _on_change(self, name: str | None, due: datetime | None) -> None:
        if self.stopping.is_set():
            return
        if name is not None and name not in self.registry:
            return
        if due is None:
            self._stir(name)
        else:
            self.timer.arm(due)

    def _on_unranked(self) -> None:
        self.unranked = True

    def _on_cancel_request(self, job_id: ObjectId | None) -> None:
        if any(run.job.id == job_id for run in self.runs):
            self.cancel_hint.set()

    def _on_stream_state(self, healthy: bool, error: BaseException | None) -> None:
        # Either way the claim loop looks now: for what was stored while the stream was down,
        # or to switch to the shorter poll interval at once.
        self._stir(None)
        if healthy:
            if self._stream_down:
                log.info("change stream open again: wake-ups are immediate")
            self._stream_down = False
            self.events.emit(Events.CHANGE_STREAM_OPEN)
        else:
            # Once per outage (the stream retries with backoff meanwhile), in one line.
            log.log(
                logging.DEBUG if self._stream_down else logging.INFO,
                "change stream unavailable, polling every %ss: %s",
                self.options.poll_interval,
                brief(error) if error is not None else "?",
            )
            self._stream_down = True
            self.events.emit(Events.POLLING_FALLBACK, error)

    # -- helpers ----------------------------------------------------------------------------

    def _side(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[Any]) -> None:
        # A side task (a cancellation's write) is not supervised: its error must not vanish.
        self._side_tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("a worker task failed: %r", error, exc_info=error)
            self.report(error)

    def report(self, error: BaseException, job: Job[Any] | None = None) -> None:
        """Emit ``job:error``; without listeners, log it."""
        if not self.events.emit(Events.JOB_ERROR, error, job):
            # Database trouble is logged by ``outage``, once per outage; the rest here.
            level = logging.DEBUG if isinstance(error, ConnectionError) else logging.WARNING
            log.log(level, "%s", error)


def time_since(run: Run) -> float:
    return time.perf_counter() - run.started
