"""The claim loop: wait for a reason to look (a change, the due timer, a freed slot, the poll
interval), then claim for every free slot in as few round trips as the queue allows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from pymongo.errors import PyMongoError

from monque.errors import ConnectionError, brief
from monque.storage import jobs as ops

if TYPE_CHECKING:
    from monque.worker.runtime import WorkerRuntime

__all__ = ["Claimer"]

log = logging.getLogger("monque.worker.claimer")

_CLAIM_BATCH = 100
_CLAIM_RACES = 5
_SETTLE_WAIT = 1.0
_MAX_ERROR_BACKOFF = 30.0
# A job found due right after a claim read that missed it is claimed this much later (a floor
# that keeps a claim filter and the next-due read that disagree from spinning).
_RECHECK_DUE = timedelta(milliseconds=20)


class Claimer:
    """Claims for free slots.

    Names found with nothing due are *quiet*: a freed slot of a busy name does not make the
    claimer ask for them again (most registered names are idle at any moment, and asking costs
    a read per batch). Anything that can make a job of theirs due clears them: a change-stream
    event (for that name, or for an unknown one), the due timer, a job stored or retried by
    this engine, and every poll.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self._rt = runtime
        # After the queue ran dry, a wake-up is most likely one new job: take it in one round
        # trip, and batch only once more are due.
        self._drained = True
        self._quiet: set[str] = set()
        # Bumped by every stir: a read that started before a stir cannot mark names quiet (the
        # job that caused the stir may have been stored after the read).
        self._epoch = 0

    def stir(self, name: str | None = None) -> None:
        """A job of ``name`` (None: of any name) may have become due."""
        self._epoch += 1
        if name is None:
            self._quiet.clear()
        else:
            self._quiet.discard(name)

    async def run(self) -> None:
        rt = self._rt
        loop = asyncio.get_running_loop()
        failures = 0
        # The poll is kept on its own clock: wake-ups from freed slots must not postpone it,
        # or a name kept busy would keep the quiet ones from ever being asked again.
        next_poll = loop.time()
        while not rt.stopping.is_set():
            if loop.time() >= next_poll:
                self.stir()
                interval = (
                    rt.options.stream_poll_interval if rt.streaming else rt.options.poll_interval
                )
                next_poll = loop.time() + interval
            rt.wake_event.clear()
            try:
                await self._fill_slots()
                failures = 0
                rt.outage.ok("claiming jobs")
            except PyMongoError as exc:
                failures += 1
                rt.outage.failed("claiming jobs", exc)
                rt.report(ConnectionError(f"claiming jobs failed: {brief(exc)}"))
            if failures:
                delay = min(rt.options.poll_interval * 2 ** min(failures, 10), _MAX_ERROR_BACKOFF)
                await _wait(rt.stopping, delay)
                next_poll = loop.time()
            else:
                # A stream that just failed or opened changes the interval: at most the short one.
                if not rt.streaming:
                    next_poll = min(next_poll, loop.time() + rt.options.poll_interval)
                await _wait(rt.wake_event, max(next_poll - loop.time(), 0.0))

    async def _fill_slots(self) -> None:
        """Claim for every free slot; when due jobs run out, arm the timer for the next one."""
        rt = self._rt
        cap = rt.options.instance_concurrency
        # Outcomes being written free their slots in a moment: claim for them together (one
        # batch) rather than for each as it frees (batches of one).
        await rt.writer.settled(_SETTLE_WAIT)
        if rt.unranked:
            rt.unranked = False
            await rt.coll.run(ops.rank_missing_priority([d.name for d in rt.registry]))
        races = 0
        single = self._drained
        while not rt.stopping.is_set():
            limit = _CLAIM_BATCH if cap is None else min(cap - len(rt.runs), _CLAIM_BATCH)
            if single:
                limit, single = min(limit, 1), False
            slots = {
                n: free for n, free in rt.registry.free_slots().items() if n not in self._quiet
            }
            if not slots or limit < 1:
                return
            epoch = self._epoch
            docs, exhausted = await rt.coll.run(
                ops.claim_batch(
                    slots, limit, rt.options.instance_id, rt.clock.now(), rt.options.lock_timeout
                )
            )
            for doc in docs:
                await rt.launch(doc)
            self._drained = exhausted
            if exhausted:
                # Every due job of these names was read: those with slots left have none.
                if epoch == self._epoch:
                    self._quiet |= set(rt.registry.free_slots()) & set(slots)
                await self._arm_next_due(list(slots))
                return
            # Nothing taken but more was due: other workers won those jobs; read again.
            races = 0 if docs else races + 1
            if races > _CLAIM_RACES:
                return

    async def _arm_next_due(self, names: list[str]) -> None:
        # Only with a change stream: it reports every job stored later, so one read after
        # each poll keeps the timer right. Polling alone finds delayed jobs by polling.
        # ``names`` are those just found with nothing due: a busy name's next job is looked
        # for when its slot frees.
        rt = self._rt
        if rt.streaming:
            due = await rt.coll.run(ops.next_due(names))
            if due is not None:
                # Due already: it became due between the claim read and now (its change event
                # may have come and gone while the claim ran, or the clock estimate moved):
                # look again shortly rather than wait for the next poll.
                soonest = rt.clock.now() + _RECHECK_DUE
                rt.timer.arm(max(due, soonest))


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True if ``event`` was set, False if ``timeout`` passed first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
        return True
    return False
