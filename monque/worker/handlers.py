"""Starting a handler: ``async def`` handlers as tasks on the loop, plain functions each on a
daemon thread of their own.

A thread per run (bounded by the slots) means queued work never waits behind a stuck handler,
a run's timeout starts when its handler starts, and a handler that ignores ``should_stop`` can
never keep the process alive after ``stop()`` returned (a pool's threads are joined at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from typing import Any

from monque.job import Job
from monque.worker.registry import WorkerDefinition

__all__ = ["start_handler"]


def start_handler(definition: WorkerDefinition, job: Job[Any]) -> asyncio.Future[Any]:
    """Start ``definition``'s handler on ``job``; the future resolves when it returns."""
    loop = asyncio.get_running_loop()
    if definition.is_async:
        call: Any = definition.handler(job)
        return loop.create_task(call, name=f"monque-handler-{job.id}")
    result: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if result.done():  # the run stopped waiting (shutdown): nobody to tell
            return
        if error is None:
            result.set_result(value)
        else:
            result.set_exception(error)

    def body() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(definition.handler, job)
        except BaseException as exc:  # handed to the loop, which decides
            error = exc
        # A closed loop: the worker is gone, and the result is discarded.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=body, name=f"monque-handler-{job.name}", daemon=True).start()
    return result
