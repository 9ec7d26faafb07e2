"""Blocking work off the event loop, on daemon threads of its own.

``asyncio.to_thread`` and ``run_in_executor`` use the loop's default executor, which
``asyncio.run`` joins at exit without a bound: one blocked call (a sync driver waiting on a
dead server, a handler ignoring ``should_stop``) would keep ``run_sync()`` and the process
from ending after ``stop()`` returned. A daemon thread per call never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["in_daemon_thread"]

R = TypeVar("R")


def in_daemon_thread(fn: Callable[..., R], *args: Any, name: str = "monque") -> asyncio.Future[R]:
    """Run ``fn(*args)`` (with the caller's context variables) on a new daemon thread; the
    future resolves on the running loop when it returns. Cancelling the future only stops the
    waiting: the thread runs on and its result is dropped."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[R] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if result.done():
            return
        if error is None:
            result.set_result(value)
        else:
            result.set_exception(error)

    def body() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(fn, *args)
        except BaseException as exc:  # handed to the loop, which decides
            error = exc
        # A closed loop: its worker is gone, and the result is dropped.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=body, name=name, daemon=True).start()
    return result
