"""Registered handlers: one ``WorkerDefinition`` per job name, and the slots in use per name.

Slots are counted per name, not per definition: replacing a handler while its jobs run keeps
their slots counted, and each run gives its slot back by name when it ends.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from monque.errors import WorkerRegistrationError
from monque.job import Job
from monque.policy import RetryPolicy
from monque.validation import check_name

__all__ = ["Handler", "WorkerDefinition", "WorkerRegistry", "is_async_callable"]

Handler = Callable[[Job[Any]], Awaitable[Any]] | Callable[[Job[Any]], Any]


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions and objects with an ``async def __call__``."""
    while hasattr(fn, "func") and not inspect.isfunction(fn):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable() cannot tell async apart
    )


@dataclass
class WorkerDefinition:
    name: str
    handler: Handler
    concurrency: int
    is_async: bool
    timeout: float | None = None
    policy: RetryPolicy | None = None  # None: the engine's


class WorkerRegistry:
    def __init__(self, default_concurrency: int) -> None:
        self._default = default_concurrency
        self._workers: dict[str, WorkerDefinition] = {}
        self._busy: dict[str, int] = {}

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        concurrency: int | None,
        replace: bool,
        timeout: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> WorkerDefinition:
        check_name(name)
        if not callable(handler):
            raise WorkerRegistrationError(f"handler for {name!r} is not callable: {handler!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise WorkerRegistrationError(
                f"concurrency for {name!r} must be an int >= 1, got {concurrency!r}"
            )
        if name in self._workers and not replace:
            raise WorkerRegistrationError(
                f"a worker for {name!r} is already registered; pass replace=True to swap it"
            )
        definition = WorkerDefinition(
            name,
            handler,
            concurrency or self._default,
            is_async_callable(handler),
            timeout=timeout,
            policy=policy,
        )
        self._workers[name] = definition
        return definition

    def configure(self, *, only: Iterable[str] | None, concurrency: int | None) -> None:
        if only is not None:
            keep = set(only)
            unknown = keep - set(self._workers)
            if unknown:
                raise WorkerRegistrationError(
                    f"no worker registered for {', '.join(sorted(unknown))}; "
                    f"registered: {', '.join(self._workers) or 'none'}"
                )
            self._workers = {n: d for n, d in self._workers.items() if n in keep}
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise WorkerRegistrationError(
                    f"concurrency must be an int >= 1, got {concurrency!r}"
                )
            for definition in self._workers.values():
                definition.concurrency = concurrency

    def get(self, name: str) -> WorkerDefinition | None:
        return self._workers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._workers

    def __iter__(self) -> Iterator[WorkerDefinition]:
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def free_slots(self) -> dict[str, int]:
        """Free slots per name; names without one are left out."""
        free = {d.name: d.concurrency - self._busy.get(d.name, 0) for d in self._workers.values()}
        return {name: n for name, n in free.items() if n > 0}

    def acquire(self, name: str) -> None:
        self._busy[name] = self._busy.get(name, 0) + 1

    def release(self, name: str) -> None:
        left = self._busy.get(name, 0) - 1
        if left > 0:
            self._busy[name] = left
        else:
            self._busy.pop(name, None)

    def busy(self, name: str) -> int:
        return self._busy.get(name, 0)

    @property
    def total_concurrency(self) -> int:
        return sum(d.concurrency for d in self._workers.values())
