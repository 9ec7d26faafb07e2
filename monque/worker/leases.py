"""Leases: heartbeats renew the claims this instance holds, a short check delivers cancel
requests to running handlers, and a sweep recovers the jobs of claims that expired.

Every time here is server time (``ServerClock``): the heartbeat also re-measures the offset to
the server's clock, so a host whose clock is off neither lets its leases lapse nor judges other
hosts' leases expired early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from monque.clock import SKEW_WARNING
from monque.errors import ConnectionError, InvalidJobDocumentError, brief
from monque.events import Events
from monque.job import Job, JobStatus
from monque.lifecycle import cancelled_update, failure_update, parked_update
from monque.storage import instances
from monque.storage import jobs as ops
from monque.worker import joblog
from monque.worker.run import RunState

if TYPE_CHECKING:
    from monque.worker.runtime import WorkerRuntime

__all__ = ["LeaseKeeper"]

log = logging.getLogger("monque.worker.leases")

_RECOVERY_BATCH = 100
_RECOVERY_ROUNDS = 10  # at most 1,000 expired leases per sweep; the next sweep goes on
# A cancel request reaches a running handler within this (or at once with a change stream).
CANCEL_CHECK_INTERVAL = 1.0


class LeaseKeeper:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self._rt = runtime
        self._skewed = False

    # -- the loops ------------------------------------------------------------------------------

    # The heartbeat and the cancel check go on while stop() waits for running handlers (their
    # leases must not lapse, cancel requests must reach them); stop() cancels them afterwards.
    # Recovery ends with the claiming.

    async def heartbeat_loop(self) -> None:
        await self._every(self._rt.options.heartbeat_interval, self.heartbeat, "heartbeat")

    async def recovery_loop(self) -> None:
        await self._every(
            self._rt.options.recovery_interval, self.recover, "recovery", until=self._rt.stopping
        )

    async def cancel_loop(self) -> None:
        rt = self._rt
        interval = min(CANCEL_CHECK_INTERVAL, rt.options.heartbeat_interval)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(rt.cancel_hint.wait(), interval)
            rt.cancel_hint.clear()
            try:
                await self.check_cancellations()
                rt.outage.ok("checking for cancel requests")
            except PyMongoError as exc:
                rt.outage.failed("checking for cancel requests", exc)
                rt.report(ConnectionError(f"checking for cancel requests failed: {brief(exc)}"))

    async def _every(
        self,
        interval: float,
        action: Callable[[], Awaitable[None]],
        what: str,
        until: asyncio.Event | None = None,
    ) -> None:
        rt = self._rt
        stop = until or asyncio.Event()  # never set: the loop runs until cancelled
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await action()
                rt.outage.ok(what)
            except PyMongoError as exc:
                rt.outage.failed(what, exc)
                rt.report(ConnectionError(f"{what} failed: {brief(exc)}"))

    # -- one round of each ----------------------------------------------------------------------

    async def measure_clock(self) -> None:
        rt = self._rt
        offset = await rt.coll.run(rt.clock.measure())
        skewed = abs(offset) > SKEW_WARNING
        if skewed and not self._skewed:
            log.warning(
                "this host's clock is %+.3fs off the MongoDB server's; Monque uses server time",
                -offset,
            )
            rt.events.emit(Events.CLOCK_SKEW, -offset)
        self._skewed = skewed

    async def heartbeat(self) -> None:
        rt = self._rt
        owner, lease = rt.options.instance_id, rt.options.lock_timeout
        held = [run for run in rt.runs if run.renewable]
        if held:  # the leases first: nothing else here is as urgent
            keys = [run.key for run in held]
            lost = set(await rt.coll.run(ops.renew_leases(keys, owner, rt.clock.now(), lease)))
            for run in held:
                # A finishing run's outcome write decides for itself: it may have just applied.
                if run.key in lost and run.state is RunState.RUNNING:
                    rt.lose(run)
        await rt.instances.run(instances.renew(owner, rt.clock.now(), lease))
        await self.measure_clock()

    async def check_cancellations(self) -> None:
        rt = self._rt
        running = [run for run in rt.runs if run.state is RunState.RUNNING]
        if not running:
            return
        requested = set(await rt.coll.run(ops.cancel_requests([r.key for r in running])))
        for run in running:
            if run.job.id in requested:
                rt.cancel(run)

    async def recover(self) -> None:
        """One sweep: expired Python leases, then jobs other implementations abandoned."""
        rt = self._rt
        stale = cancelled_update(rt.clock.now(), rt.options.retention).update
        if cancelled := await rt.coll.run(ops.cancel_requested_pending(stale)):
            log.info("cancelled %d pending job(s) that carried a cancel request", cancelled)
        if not rt.streaming:
            # Jobs stored without a priority are noticed by the change stream; without one,
            # the claimer looks for them after each sweep.
            rt.unranked = True
        for _ in range(_RECOVERY_ROUNDS):
            now = rt.clock.now()
            docs = await rt.coll.run(ops.find_expired(now, _RECOVERY_BATCH))
            for doc in docs:
                if ops.lease_of_claim(doc):
                    await self._recover_one(doc, now)
                else:
                    await self._drop_stale_lease(doc, now)
            if len(docs) < _RECOVERY_BATCH or rt.stopping.is_set():
                break
        lease, ts_lease = rt.options.lock_timeout, rt.options.ts_lock_timeout
        ts_stop = rt.options.ts_shutdown_timeout
        for _ in range(_RECOVERY_ROUNDS):
            if rt.stopping.is_set():
                return
            now = rt.clock.now()
            docs = await rt.coll.run(
                ops.find_foreign_expired(now, lease, ts_lease, _RECOVERY_BATCH, ts_stop)
            )
            expired = [
                d for d in docs if ops.foreign_lease_expired(d, now, lease, ts_lease, ts_stop)
            ]
            for doc in expired:
                await self._recover_one(doc, now)
            # Only candidates not yet expired came back: the next sweep looks again.
            if len(docs) < _RECOVERY_BATCH or not expired:
                return

    async def _drop_stale_lease(self, doc: dict[str, Any], now: datetime) -> None:
        # Another implementation (the TypeScript Monque) claimed this job over an earlier
        # Python claim's lease: that lease says nothing about the claim; judge it by the
        # fields its owner keeps fresh.
        if not await self._rt.coll.run(ops.clear_stale_lease(doc)):
            return  # changed meanwhile: the next sweep sees what it is now
        doc = {k: v for k, v in doc.items() if k not in ("claimToken", "lockExpiresAt")}
        options = self._rt.options
        if ops.foreign_lease_expired(
            doc, now, options.lock_timeout, options.ts_lock_timeout, options.ts_shutdown_timeout
        ):
            await self._recover_one(doc, now)

    async def _recover_one(self, doc: dict[str, Any], now: datetime) -> None:
        rt = self._rt
        try:
            job = Job.from_document(doc)
        except InvalidJobDocumentError as exc:
            # Parked as failed, so a malformed document is reported once and never starves
            # the sweep of the valid ones behind it.
            update = {
                "$set": {
                    "status": JobStatus.FAILED.value,
                    "failReason": f"invalid job document: {exc}",
                    "updatedAt": now,
                },
                "$unset": ops.LEASE_FIELDS,
            }
            await rt.coll.run(ops.recover(doc, now, update))
            rt.report(exc)
            return
        if doc.get("cancelRequested") is True:
            outcome = cancelled_update(now, rt.options.retention)
        else:
            definition = rt.registry.get(job.name)
            policy = (definition.policy if definition else None) or rt.options.retry_policy
            try:
                outcome = failure_update(
                    job,
                    now,
                    f"worker lost: lease of {job.claimed_by!r} expired",
                    policy,
                    immediate=True,
                    retention=rt.options.retention,
                )
            except Exception as exc:  # its schedule cannot be evaluated here: park it
                reason = f"invalid job document: {exc!r}"
                parked = parked_update(now, reason, rt.options.retention)
                if await rt.coll.run(ops.recover(doc, now, parked.update)):
                    rt.report(InvalidJobDocumentError(reason, job.id), job)
                return
        if await rt.coll.run(ops.recover(doc, now, outcome.update)):
            apply_update(job, outcome.update)
            cancelled = doc.get("cancelRequested") is True
            rt.events.emit(Events.JOB_CANCELLED if cancelled else Events.JOB_RECOVERED, job)
            if cancelled:
                joblog.cancelled(job)
            else:
                joblog.recovered(job, doc.get("claimedBy"))
            rt.wake()


def apply_update(job: Job[Any], update: dict[str, Any]) -> None:
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
