"""Wake-ups from the database: a change stream on the jobs collection and a next-due timer.

An idle worker learns that a job became due (inserted, retried, released, rescheduled) from
the change stream instead of its next poll; a job due later arms a timer at its due time.
Where change streams are unavailable (a standalone mongod) the worker polls, and says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, cast

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

from monque.job import JobStatus
from monque.storage.calls import JobCollection

__all__ = ["PIPELINE", "ChangeWatcher", "DueTimer", "due_time"]

_PENDING = JobStatus.PENDING.value
# Only changes that can make a job due reach the worker: new pending jobs, and updates that
# set status back to pending or move nextRunAt. Claims, heartbeats, progress and completions
# are filtered out by the server (on mongod), so a busy queue does not wake idle workers.
PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.status": _PENDING},
                {"operationType": "update", "updateDescription.updatedFields.status": _PENDING},
                {
                    "operationType": "update",
                    "updateDescription.updatedFields.nextRunAt": {"$exists": True},
                },
                {
                    "operationType": "update",
                    "updateDescription.updatedFields.cancelRequested": True,
                },
                {"operationType": {"$in": ["drop", "rename", "dropDatabase", "invalidate"]}},
            ]
        }
    },
    {
        "$project": {
            "operationType": 1,
            "documentKey": 1,
            "updateDescription.updatedFields.cancelRequested": 1,
            "fullDocument.name": 1,
            "fullDocument.nextRunAt": 1,
            "fullDocument.priority": 1,
            "updateDescription.updatedFields.nextRunAt": 1,
        }
    },
]
_ENDS_STREAM = {"drop", "rename", "dropDatabase", "invalidate"}
# Server codes meaning "no change streams here" (40573: standalone mongod; 115:
# CommandNotSupported) fall back to polling for good; "that point in the oplog is gone"
# (ChangeStreamHistoryLost, ChangeStreamFatalError, CappedPositionLost) reopens without a token.
_UNSUPPORTED = {40573, 115}
_HISTORY_LOST = {286, 280, 136}
_MAX_BACKOFF = 30.0
_REOPEN_DELAY = 0.1


def due_time(change: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
    """(job name if known, when it is due if known) for a change the pipeline let through."""
    full = change.get("fullDocument") or {}
    updated = (change.get("updateDescription") or {}).get("updatedFields") or {}
    due = updated.get("nextRunAt", full.get("nextRunAt"))
    if isinstance(due, datetime):
        due = due if due.tzinfo is not None else due.replace(tzinfo=timezone.utc)
    else:
        due = None
    name = full.get("name")
    return (name if isinstance(name, str) else None), due


class DueTimer:
    """One timer at the earliest known due time; firing calls ``wake``."""

    def __init__(self, wake: Callable[[], None], clock: Callable[[], datetime]) -> None:
        self._wake = wake
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._at: datetime | None = None

    def arm(self, due: datetime) -> None:
        """Wake at ``due`` (now if it is past), unless a timer fires sooner already."""
        delay = (due - self._clock()).total_seconds()
        if delay <= 0:
            self._wake()
            return
        if self._at is not None and self._at <= due:
            return
        self.cancel()
        self._at = due
        # A few ms late rather than early: the claim compares nextRunAt with the wall clock.
        self._handle = asyncio.get_running_loop().call_later(delay + 0.005, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, None

    def _fire(self) -> None:
        self._handle, self._at = None, None
        self._wake()


class ChangeWatcher:
    """Follows the change stream, resuming with its token after errors.

    ``on_change(name, due)`` gets each relevant change, ``on_cancel(job_id)`` each cancellation
    request of a running job; ``on_state(healthy, error)`` is called
    each time a stream opens (True, None) and when one fails or is unavailable (False, error).
    ``run()`` returns only when change streams are unsupported by the server.
    """

    def __init__(
        self,
        collection: JobCollection,
        on_change: Callable[[str | None, datetime | None], None],
        on_state: Callable[[bool, BaseException | None], None],
        max_await: float,
        on_cancel: Callable[[Any], None] = lambda job_id: None,
        on_unranked: Callable[[], None] = lambda: None,
    ) -> None:
        self._coll = collection
        self._on_change = on_change
        self._on_cancel = on_cancel
        self._on_unranked = on_unranked
        self._on_state = on_state
        self._max_await_ms = max(int(max_await * 1000), 1)
        self._token: Mapping[str, Any] | None = None
        self._stopped = False
        self.healthy = False

    def stop(self) -> None:
        """End ``run()`` at its next step. Needed besides cancelling the task: the driver can
        replace the CancelledError by the error of closing the stream (a failed killCursors),
        which would otherwise look like a stream failure and reopen it."""
        self._stopped = True
        self.healthy = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def run(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                if self._coll.is_async:
                    await self._follow_async()
                else:
                    await self._follow_sync()
                # The stream ended cleanly (collection dropped or renamed): open a new one,
                # without spinning if it keeps ending.
                failures = 0
                await asyncio.sleep(_REOPEN_DELAY)
            except PyMongoError as exc:
                if self.stopped:  # the stop, not the stream, caused this error
                    return
                self._set_state(False, exc)
                code = exc.code if isinstance(exc, OperationFailure) else None
                if code in _UNSUPPORTED or "replica set" in str(exc):
                    return
                if code in _HISTORY_LOST:
                    self._token = None
                failures += 1
                await asyncio.sleep(min(0.1 * 2**failures, _MAX_BACKOFF))
            except Exception as exc:
                # Not the stream's error but a bug or a surprise: the worker must poll at its
                # short interval until the supervisor has this follower running again.
                if not self.stopped:
                    self._set_state(False, exc)
                raise

    def _set_state(self, healthy: bool, error: BaseException | None) -> None:
        # Every (re)open is reported; a failure only with its error.
        if healthy or error is not None:
            self.healthy = healthy
            self._on_state(healthy, error)

    def _deliver(self, change: Mapping[str, Any]) -> None:
        updated = (change.get("updateDescription") or {}).get("updatedFields") or {}
        if updated.get("cancelRequested") is True:
            self._on_cancel((change.get("documentKey") or {}).get("_id"))
            return
        full = change.get("fullDocument")
        if isinstance(full, Mapping) and "priority" not in full:
            self._on_unranked()  # stored by the TypeScript Monque: no priority field
        self._on_change(*due_time(change))

    def _ends(self, change: Mapping[str, Any] | None) -> bool:
        if change is not None and change.get("operationType") in _ENDS_STREAM:
            self._token = None  # a dropped collection's stream cannot be resumed
            return True
        return False

    async def _follow_async(self) -> None:
        coll = cast("AsyncCollection[dict[str, Any]]", self._coll.collection)
        stream = await coll.watch(
            PIPELINE, resume_after=self._token, max_await_time_ms=self._max_await_ms
        )
        try:
            self._set_state(True, None)
            while stream.alive and not self._stopped:
                change = await stream.try_next()
                self._token = stream.resume_token
                if self._ends(change):
                    return
                if change is not None:
                    self._deliver(change)
        finally:
            await asyncio.shield(stream.close())

    async def _follow_sync(self) -> None:
        # A sync driver blocks in getMore: follow on a daemon thread of its own, so neither
        # the event loop nor its default executor (joined at exit) waits on it.
        loop = asyncio.get_running_loop()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        stop = threading.Event()

        def on_loop(change: Mapping[str, Any]) -> None:
            if not stop.is_set():
                self._deliver(change)

        def pump() -> None:
            coll = cast("Collection[dict[str, Any]]", self._coll.collection)
            try:
                with coll.watch(
                    PIPELINE, resume_after=self._token, max_await_time_ms=self._max_await_ms
                ) as stream:
                    loop.call_soon_threadsafe(self._set_state, True, None)
                    while stream.alive and not stop.is_set() and not self._stopped:
                        change = stream.try_next()
                        self._token = stream.resume_token
                        if self._ends(change):
                            break
                        if change is not None:
                            loop.call_soon_threadsafe(on_loop, change)
                outcome: BaseException | None = None
            except BaseException as exc:  # handed to the loop side, which decides
                outcome = exc
            if not done.cancelled():  # the loop side stopped waiting: nobody to tell
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    if outcome is None:
                        done.set_result(None)
                    else:
                        done.set_exception(outcome)

        threading.Thread(target=pump, name="monque-change-stream", daemon=True).start()
        try:
            await asyncio.wrap_future(done)
        finally:
            stop.set()
