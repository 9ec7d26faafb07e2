"""The worker runtime: a registry of handlers, and the loops that claim, run and settle jobs.

- ``registry``: handlers per job name and the slots they use.
- ``run``: one claimed execution (``Run``) and its states (``RunState``).
- ``handlers``: starting a handler (an async task, or a sync function on its own thread).
- ``claimer``: the claim loop (wake-ups, batches, the next-due timer).
- ``leases``: heartbeats, cancellation checks and the recovery sweep.
- ``writer``: group commit of outcomes.
- ``wakeups``: the change stream and the due timer.
- ``supervisor``: runs every background loop, restarts it on errors, stops loudly if it cannot.
- ``runtime``: ties them together (``start``/``stop``).
"""

from monque.worker.registry import Handler, WorkerDefinition, WorkerRegistry, is_async_callable
from monque.worker.run import Run, RunState

__all__ = [
    "Handler",
    "Run",
    "RunState",
    "WorkerDefinition",
    "WorkerRegistry",
    "is_async_callable",
]
