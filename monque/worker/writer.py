"""Group commit for the outcomes of finished runs.

Runs that finish while a write is in flight are written together by the next ``bulk_write``:
one round trip per batch instead of one per run, each update still guarded by its run's claim.
No outcome can poison another: a batch that fails for any reason other than the connection is
written again item by item, and an item that cannot be written alone fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import BulkWriteError, PyMongoError, WriteError

from monque.storage import jobs as ops
from monque.storage.calls import JobCollection

__all__ = ["OutcomeWriter"]

log = logging.getLogger("monque.worker.writer")

_RETRY_CAP = 5.0


@dataclass
class _Pending:
    item: ops.OutcomeWrite
    wanted: Callable[[], bool]
    done: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OutcomeWriter:
    """Queue claim-guarded outcomes; one task flushes whatever is queued in one write.

    ``write`` resolves to ``ops.APPLIED``, ``ops.LOST`` or ``ops.CANCEL`` (see
    ``ops.apply_transitions``); ``ops.LOST`` too when the caller stopped wanting the write while
    outages delayed it. It raises the error of an outcome that cannot be stored at all. Connection
    errors are reported through ``on_error`` and retried with backoff.
    """

    def __init__(
        self,
        collection: JobCollection,
        owner: str,
        on_error: Callable[[PyMongoError, list[ops.OutcomeWrite]], None],
    ) -> None:
        self._coll = collection
        self._owner = owner
        self._on_error = on_error
        self._queue: list[_Pending] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def write(self, item: ops.OutcomeWrite, wanted: Callable[[], bool]) -> str:
        pending = _Pending(item, wanted)
        self._queue.append(pending)
        self._idle.clear()
        self._ready.set()
        return await asyncio.shield(pending.done)

    async def run(self) -> None:
        """The flushing loop (supervised); whatever it holds when it ends is settled as lost."""
        try:
            while True:
                await self._ready.wait()
                await asyncio.sleep(0)  # let every run finishing in this loop turn join the batch
                batch = [p for p in self._queue if not p.done.done()]
                self._queue = []
                self._ready.clear()
                await self._flush(batch)
                if not self._queue:
                    self._idle.set()
        finally:
            for pending in self._queue:
                _settle(pending, ops.LOST)

    async def _flush(self, batch: list[_Pending]) -> None:
        attempt = 0
        try:
            while batch:
                batch = [p for p in batch if p.wanted() or _settle(p, ops.LOST)]
                if not batch:
                    return
                try:
                    results = await self._coll.run(
                        ops.apply_transitions([p.item for p in batch], self._owner)
                    )
                except PyMongoError as exc:
                    if not _is_connection_trouble(exc):
                        await self._one_by_one(batch, exc)
                        return
                    attempt += 1
                    self._on_error(exc, [p.item for p in batch])
                    await asyncio.sleep(min(0.05 * 2**attempt, _RETRY_CAP))
                    continue
                except Exception as exc:  # an unstorable update (encoding, size, a bug)
                    await self._one_by_one(batch, exc)
                    return
                for pending, result in zip(batch, results, strict=True):
                    _settle(pending, result)
                return
        finally:
            for pending in batch:  # cancelled mid-write: nobody may wait forever
                _settle(pending, ops.LOST)

    async def _one_by_one(self, batch: list[_Pending], error: BaseException) -> None:
        if len(batch) == 1:
            log.error("an outcome could not be stored: %r", error)
            if not batch[0].done.done():
                batch[0].done.set_exception(error)
            return
        for pending in batch:
            await self._flush([pending])

    async def settled(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until nothing is queued or being written."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


def _is_connection_trouble(exc: PyMongoError) -> bool:
    # Errors a retry can cure: the network, a primary stepping down, a timeout. A write error
    # about the document itself (too large, invalid) is not retried as a whole batch.
    return not isinstance(exc, (BulkWriteError, WriteError))


def _settle(pending: _Pending, value: Any) -> bool:
    if not pending.done.done():
        pending.done.set_result(value)
    return False
