"""Starting a handler: ``async def`` handlers as tasks on the loop, plain functions each on a
daemon thread of their own.

A thread per run (bounded by the slots) means queued work never waits behind a stuck handler,
a run's timeout starts when its handler starts, and a handler that ignores ``should_stop`` can
never keep the process alive after ``stop()`` returned (a pool's threads are joined at exit).
"""

from __future__ import annotations

import asyncio
from typing import Any

from monque.job import Job
from monque.threads import in_daemon_thread
from monque.worker.registry import WorkerDefinition

__all__ = ["start_handler"]


def start_handler(definition: WorkerDefinition, job: Job[Any]) -> asyncio.Future[Any]:
    """Start ``definition``'s handler on ``job``; the future resolves when it returns."""
    if definition.is_async:
        call: Any = definition.handler(job)
        return asyncio.get_running_loop().create_task(call, name=f"monque-handler-{job.id}")
    return in_daemon_thread(definition.handler, job, name=f"monque-handler-{job.name}")
