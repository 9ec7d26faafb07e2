"""An EventEmitter-style API (``on``, ``once``, ``off``) whose listeners can never stop a worker.

Sync listeners run inline; async listeners run as tasks on the running loop (or to completion
when no loop runs, e.g. from the sync face). A listener that raises is logged and ignored.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["EventEmitter", "Events", "Listener"]

log = logging.getLogger("monque.events")

Listener = Callable[..., Any]


class Events:
    """Event names."""

    JOB_START: Final = "job:start"  # (job)
    JOB_COMPLETE: Final = "job:complete"  # (job, duration_seconds)
    JOB_FAIL: Final = "job:fail"  # (job, error, will_retry)
    JOB_ERROR: Final = "job:error"  # (error, job or None)
    JOB_LOST: Final = "job:lost"  # (job): this worker no longer holds the job's lease
    JOB_RECOVERED: Final = "job:recovered"  # (job): an expired lease was swept back
    JOB_CANCELLED: Final = "job:cancelled"  # (job)
    JOB_RETRIED: Final = "job:retried"  # (job)
    JOB_RESCHEDULED: Final = "job:rescheduled"  # (job)
    JOB_DELETED: Final = "job:deleted"  # (job)
    JOB_PROGRESS: Final = "job:progress"  # (job, value, message)
    JOBS_CANCELLED: Final = "jobs:cancelled"  # (count, selector)
    JOBS_RETRIED: Final = "jobs:retried"  # (count, selector)
    JOBS_DELETED: Final = "jobs:deleted"  # (count, selector)
    WORKER_STARTED: Final = "worker:started"  # (): run()/run_sync() is processing
    CHANGE_STREAM_OPEN: Final = "changestream:open"  # (): a stream (re)opened; wake-ups on
    POLLING_FALLBACK: Final = "polling:fallback"  # (error): stream dropped or unsupported
    CLOCK_SKEW: Final = "clock:skew"  # (seconds): this host's clock is off the server's


class EventEmitter:
    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, listener: Listener | None = None) -> Any:
        """Add a listener; usable as ``@monque.on("job:fail")`` too."""
        if listener is None:
            return lambda fn: self.on(event, fn)
        self._listeners.setdefault(event, []).append((listener, False))
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        self._listeners.setdefault(event, []).append((listener, True))
        return listener

    def off(self, event: str, listener: Listener | None = None) -> None:
        """Remove one listener, or all of an event's listeners when none is given."""
        if listener is None:
            self._listeners.pop(event, None)
            return
        entries = self._listeners.get(event, [])
        for i, (fn, _) in enumerate(entries):
            if fn is listener:
                del entries[i]
                return

    def listener_count(self, event: str) -> int:
        return len(self._listeners.get(event, []))

    def emit(self, event: str, *args: Any) -> bool:
        """Call the event's listeners; True if there were any."""
        entries = self._listeners.get(event)
        if not entries:
            return False
        self._listeners[event] = [entry for entry in entries if not entry[1]]
        for listener, _ in entries:
            try:
                result = listener(*args)
                if inspect.isawaitable(result):
                    self._schedule(event, result)
            except Exception:
                log.exception("listener for %r raised; ignored", event)
        return True

    def _schedule(self, event: str, awaitable: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("async listener for %r raised; ignored", event)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(guarded())
            return
        task = loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain_listeners(self, timeout: float | None = None) -> bool:
        """Wait for async listeners still running (used by ``stop()``), at most ``timeout``
        seconds; False if some were still running then (they are left running)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=left)
        return True
