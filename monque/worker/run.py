"""One claimed execution of a job: the ``Run``, held by reference, never looked up by job id.

A claim writes a fresh token on the document; the run carries it, and every write the run makes
is guarded by it. Two runs of one job (a lost run still finishing, and a later claim of the same
job by the same instance) are two objects with two tokens and never see each other's writes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bson import ObjectId

from monque.job import Job
from monque.worker.registry import WorkerDefinition

__all__ = ["Run", "RunState"]


class RunState(str, Enum):
    """Where a run is. Only ``RUNNING`` and ``FINISHING`` runs hold their claim."""

    RUNNING = "running"  # the handler runs; nothing decided yet
    FINISHING = "finishing"  # the handler ended; its outcome is being written
    CANCELLED = "cancelled"  # cancellation was requested: the job is cancelled, handler told
    TIMED_OUT = "timed-out"  # past its timeout: the failure is recorded, the handler told
    ABANDONED = "abandoned"  # lost its claim, or handed back at shutdown: nothing more written
    DONE = "done"  # the outcome is written

    @property
    def holds_claim(self) -> bool:
        return self in (RunState.RUNNING, RunState.FINISHING)


@dataclass(eq=False)
class Run:
    """A job this instance claimed, with the claim's token and the run's state.

    The run's slot is held until its handler returns, whatever the state: a sync handler that
    outlives its timeout or cancellation still occupies a thread, and stays visible as such.
    """

    job: Job[Any]
    definition: WorkerDefinition
    token: str | None
    state: RunState = RunState.RUNNING
    started: float = field(default_factory=time.perf_counter)
    task: asyncio.Task[None] | None = None
    handler: asyncio.Future[Any] | None = None  # the async handler's task or the thread's result
    interrupted: bool = False  # Monque itself asked the handler to stop
    writing: bool = False  # an outcome write of this run is in flight: its lease must live

    @property
    def key(self) -> tuple[ObjectId, str | None]:
        return (self.job.id, self.token)

    @property
    def renewable(self) -> bool:
        """The run holds its claim, or is writing the outcome that releases it."""
        return self.state.holds_claim or self.writing

    @property
    def name(self) -> str:
        return self.job.name

    def interrupt(self) -> None:
        """Tell the handler to stop: an async one is cancelled, a sync one sees
        ``job.should_stop``."""
        self.interrupted = True
        self.job._stop_flag.set()
        if self.handler is not None and self.definition.is_async:
            self.handler.cancel()

    def leave(self, state: RunState) -> bool:
        """Move from a claim-holding state to ``state``; False if the run had already left."""
        if not self.state.holds_claim:
            return False
        self.state = state
        return True
