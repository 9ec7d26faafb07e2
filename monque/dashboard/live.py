"""Live updates as server-sent events: a change stream on the jobs collection where the server
has one, a timer where it has not (a standalone mongod). The page reloads its live region on
each event; events are coalesced to at most one per ``min_gap`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

from monque.storage.calls import JobCollection

__all__ = ["events"]

log = logging.getLogger("monque.dashboard")

_NO_STREAMS = {40573, 115}  # standalone mongod; CommandNotSupported
_PIPELINE: list[dict[str, Any]] = [{"$project": {"operationType": 1}}]
_KEEPALIVE = 15.0


async def events(
    jobs: JobCollection,
    *,
    poll_interval: float,
    min_gap: float = 1.0,
    on_change: Callable[[], None] | None = None,
    resumed: bool = False,
) -> AsyncGenerator[str, None]:
    """SSE lines: first a ``ready`` event once updates can flow (the change stream is open, or
    polling was chosen), then ``data: change`` after writes (or ``data: tick`` every
    ``poll_interval`` without a change stream), comments as keep-alives. ``on_change`` is
    called as soon as a change is seen (before the coalesced event goes out): cached figures
    older than it are stale. ``resumed``: a page reconnecting (its ``Last-Event-ID``); writes
    made while it was away went unseen, so ``on_change`` is called once the stream is open."""
    # The stream opens before the first line: a page that shows "live" on ``ready`` then
    # cannot miss a write made right after (the response headers alone come earlier).
    try:
        stream = await _open(jobs)
    except OperationFailure as exc:
        if exc.code not in _NO_STREAMS:
            log.warning("dashboard: no change stream (%s); polling", exc)
        stream = None
    except PyMongoError as exc:
        log.warning("dashboard: no change stream (%s); polling", exc)
        stream = None
    how = "poll" if stream is None else "stream"
    # The id makes a reconnecting browser say so (Last-Event-ID): see ``resumed``.
    ready = f"retry: {int(poll_interval * 1000)}\nid: ready\nevent: ready\ndata: {how}\n\n"
    if resumed and on_change is not None:
        on_change()  # the page reloads on this ready: it must not get figures cached meanwhile
    if stream is None:
        yield ready
        while True:
            await asyncio.sleep(poll_interval)
            yield "data: tick\n\n"
    try:
        yield ready
        last_sent = 0.0
        last_line = time.monotonic()
        pending = False
        while True:
            try:
                change = await _next(jobs, stream)
            except PyMongoError as exc:
                log.warning("dashboard: change stream ended (%s); the page will reconnect", exc)
                return
            now = time.monotonic()
            if change is not None and on_change is not None:
                on_change()
            pending = pending or change is not None
            if pending and now - last_sent >= min_gap:
                yield "data: change\n\n"
                last_sent = last_line = now
                pending = False
            elif now - last_line >= _KEEPALIVE:
                yield ": keep-alive\n\n"
                last_line = now
    finally:
        await _close(jobs, stream)


async def _open(jobs: JobCollection) -> Any:
    if jobs.is_async:
        native = cast("AsyncCollection[dict[str, Any]]", jobs.collection)
        return await native.watch(_PIPELINE, max_await_time_ms=500)
    sync = cast("Collection[dict[str, Any]]", jobs.collection)
    return await asyncio.to_thread(sync.watch, _PIPELINE, max_await_time_ms=500)


async def _next(jobs: JobCollection, stream: Any) -> Any:
    if jobs.is_async:
        return await stream.try_next()
    return await asyncio.to_thread(stream.try_next)


async def _close(jobs: JobCollection, stream: Any) -> None:
    # Bounded: closing a cursor on a server that went away must not hold the response open.
    with contextlib.suppress(Exception):
        if jobs.is_async:
            await asyncio.wait_for(stream.close(), 2.0)
        else:
            await asyncio.wait_for(asyncio.to_thread(stream.close), 2.0)
