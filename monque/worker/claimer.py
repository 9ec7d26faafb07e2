"""The claim loop: wait for a reason to look (a change, the due timer, a freed slot, the poll
interval), then claim for every free slot in as few round trips as the queue allows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from monque.errors import ConnectionError
from monque.storage import jobs as ops

if TYPE_CHECKING:
    from monque.worker.runtime import WorkerRuntime

__all__ = ["Claimer"]

log = logging.getLogger("monque.worker.claimer")

_CLAIM_BATCH = 100
_CLAIM_RACES = 5
_SETTLE_WAIT = 1.0
_MAX_ERROR_BACKOFF = 30.0


class Claimer:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self._rt = runtime
        # After the queue ran dry, a wake-up is most likely one new job: take it in one round
        # trip, and batch only once more are due.
        self._drained = True

    async def run(self) -> None:
        rt = self._rt
        failures = 0
        while not rt.stopping.is_set():
            rt.wake_event.clear()
            try:
                await self._fill_slots()
                failures = 0
            except PyMongoError as exc:
                failures += 1
                rt.report(ConnectionError(f"claiming jobs failed: {exc}"))
            if failures:
                delay = min(rt.options.poll_interval * 2 ** min(failures, 10), _MAX_ERROR_BACKOFF)
                await _wait(rt.stopping, delay)
            elif rt.streaming:
                await _wait(rt.wake_event, rt.options.stream_poll_interval)
            else:
                await _wait(rt.wake_event, rt.options.poll_interval)

    async def _fill_slots(self) -> None:
        """Claim for every free slot; when due jobs run out, arm the timer for the next one."""
        rt = self._rt
        cap = rt.options.instance_concurrency
        # Outcomes being written free their slots in a moment: claim for them together (one
        # batch) rather than for each as it frees (batches of one).
        await rt.writer.settled(_SETTLE_WAIT)
        races = 0
        single = self._drained
        while not rt.stopping.is_set():
            limit = _CLAIM_BATCH if cap is None else min(cap - len(rt.runs), _CLAIM_BATCH)
            if single:
                limit, single = min(limit, 1), False
            slots = rt.registry.free_slots()
            if not slots or limit < 1:
                return
            docs, exhausted = await rt.coll.run(
                ops.claim_batch(
                    slots, limit, rt.options.instance_id, rt.clock.now(), rt.options.lock_timeout
                )
            )
            for doc in docs:
                await rt.launch(doc)
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
        rt = self._rt
        if rt.streaming:
            due = await rt.coll.run(ops.next_due(names))
            # A job due already appeared after the claim read: its change event wakes us.
            if due is not None and due > rt.clock.now():
                rt.timer.arm(due)


async def _wait(event: asyncio.Event, timeout: float) -> Any:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
