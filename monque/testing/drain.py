"""Run a queue until nothing is due or running: enqueue, drain, assert, with no sleeps."""

from __future__ import annotations

import asyncio
import time

from monque.engine import Monque
from monque.errors import MonqueError
from monque.job import JobStatus, utcnow

__all__ = ["drain", "drain_sync"]


async def drain(monque: Monque, *, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Start ``monque`` if needed and wait until none of its workers' jobs is due or running.

    Raises ``TimeoutError`` if the queue is not drained within ``timeout`` seconds. Jobs whose
    retries are scheduled in the future do not count as due.
    """
    if not monque.is_running:
        await monque.start()
    names = monque.worker_names
    deadline = time.monotonic() + timeout
    while True:
        busy = await monque.jobs.call_count(
            {
                "name": {"$in": names},
                "$or": [
                    {"status": JobStatus.PROCESSING.value},
                    {"status": JobStatus.PENDING.value, "nextRunAt": {"$lte": utcnow()}},
                ],
            }
        )
        if busy == 0 and not monque.running_jobs:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not drained after {timeout}s: {busy} job(s) due or running")
        await asyncio.sleep(interval)


def drain_sync(monque: Monque, *, timeout: float = 10.0, interval: float = 0.02) -> None:
    """``drain`` for sync apps (Flask, scripts, ``SyncMonqueContainer``): runs the worker in
    this thread until nothing is due or running, then stops it.

    The engine must not be running already (a worker in another thread or loop): this call
    runs one itself.
    """
    if monque.is_running:
        raise MonqueError(
            "drain_sync() runs the worker itself: stop the running one first, or await drain()"
        )

    async def run() -> None:
        try:
            await drain(monque, timeout=timeout, interval=interval)
        finally:
            await monque.stop()

    asyncio.run(run())
