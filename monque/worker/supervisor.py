"""Every background loop of a worker runs under one supervisor.

A loop that raises is logged with its traceback, reported on ``job:error`` and restarted after a
backoff; a loop that keeps crashing (``MAX_CRASHES`` in a row, each within ``HEALTHY_AFTER``
seconds of its restart) cannot go on, and the supervisor stops the worker loudly through
``on_fatal``. Nothing ends silently. A loop that returns has finished its work (for example a
change stream the server does not support) and is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from monque.errors import MonqueError

__all__ = ["HEALTHY_AFTER", "MAX_CRASHES", "LoopCrashedError", "Supervisor"]

log = logging.getLogger("monque.worker.supervisor")

MAX_CRASHES = 5
HEALTHY_AFTER = 60.0
_MAX_BACKOFF = 10.0


class LoopCrashedError(MonqueError):
    """A worker loop raised an unexpected error; it was restarted (or, if it kept crashing,
    the worker was stopped). ``loop`` names it; the error is the ``__cause__``."""

    def __init__(self, loop: str, error: BaseException, *, fatal: bool = False) -> None:
        what = "stopped the worker" if fatal else "was restarted"
        super().__init__(f"worker loop {loop!r} crashed and {what}: {error!r}")
        self.loop = loop
        self.fatal = fatal
        self.__cause__ = error


class Supervisor:
    def __init__(
        self,
        on_error: Callable[[BaseException], None],
        on_fatal: Callable[[LoopCrashedError], None],
    ) -> None:
        self._on_error = on_error
        self._on_fatal = on_fatal
        self._stopping = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self.tasks[name] = asyncio.create_task(self._guard(name, loop), name=f"monque-{name}")

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _guard(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        crashes = 0
        while not self._stopping.is_set():
            began = loop.time()
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    return  # an error of the stop itself (a closed stream, a cancelled call)
                crashes = 1 if loop.time() - began > HEALTHY_AFTER else crashes + 1
                fatal = crashes >= MAX_CRASHES
                error = LoopCrashedError(name, exc, fatal=fatal)
                log.error("%s", error, exc_info=exc)
                self._on_error(error)
                if fatal:
                    self._on_fatal(error)
                    return
            delay = min(0.05 * 2**crashes, _MAX_BACKOFF)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def stop(self) -> None:
        """Ask every loop to end; restarts stop at once."""
        self._stopping.set()
