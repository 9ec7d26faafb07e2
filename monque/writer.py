"""Group commit for the results of finished jobs.

Jobs that finish while a write is in flight are written together by the next ``bulk_write``:
one round trip per batch instead of one per job, each update still owner-guarded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from monque.storage import jobs as ops
from monque.storage.calls import JobCollection

__all__ = ["TransitionWriter"]

_RETRY_CAP = 5.0


@dataclass
class _Pending:
    job_id: ObjectId
    update: dict[str, Any]
    wanted: Callable[[], bool]
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TransitionWriter:
    """Queue owner-guarded updates; a single task flushes whatever is queued in one write.

    ``write`` resolves True once the update is applied, False when this owner no longer holds
    the job (or the caller stopped wanting it while outages delayed the write). Write errors
    are reported through ``on_error`` and retried with backoff until one of those happens.
    """

    def __init__(
        self,
        collection: JobCollection,
        owner: str,
        on_error: Callable[[PyMongoError, list[ObjectId]], None],
    ) -> None:
        self._coll = collection
        self._owner = owner
        self._on_error = on_error
        self._queue: list[_Pending] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def write(
        self, job_id: ObjectId, update: dict[str, Any], wanted: Callable[[], bool]
    ) -> bool:
        item = _Pending(job_id, update, wanted)
        self._queue.append(item)
        self._idle.clear()
        self._ready.set()
        return await asyncio.shield(item.done)

    async def run(self) -> None:
        """The flushing task; cancel it once nothing more will be written."""
        attempt = 0
        while True:
            await self._ready.wait()
            await asyncio.sleep(0)  # let every job finishing in this loop turn join the batch
            batch = [item for item in self._queue if not item.done.done()]
            self._queue = []
            self._ready.clear()
            while batch:
                batch = [item for item in batch if item.wanted() or _settle(item, False)]
                if not batch:
                    break
                try:
                    applied = await self._coll.run(
                        ops.apply_transitions(
                            [(item.job_id, item.update) for item in batch], self._owner
                        )
                    )
                except PyMongoError as exc:
                    attempt += 1
                    self._on_error(exc, [item.job_id for item in batch])
                    await asyncio.sleep(min(0.05 * 2**attempt, _RETRY_CAP))
                    continue
                attempt = 0
                for item, ok in zip(batch, applied, strict=True):
                    _settle(item, ok)
                batch = []
            if not self._queue:
                self._idle.set()

    async def settled(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until nothing is queued or being written."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


def _settle(item: _Pending, value: bool) -> bool:
    if not item.done.done():
        item.done.set_result(value)
    return False
