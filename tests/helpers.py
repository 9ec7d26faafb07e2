"""Polling with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition not met",
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result: Any = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s (last value: {result!r})")
        await asyncio.sleep(interval)


class Recorder:
    """Collects events as (name, args) and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def listen(self, emitter: Any, *names: str) -> Recorder:
        for name in names:
            emitter.on(name, lambda *args, _n=name: self.events.append((_n, args)))
        return self

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.events if n == name]

    async def wait_for(
        self, name: str, count: int = 1, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        await eventually(
            lambda: len(self.of(name)) >= count, timeout=timeout, message=f"{count} x {name}"
        )
        return self.of(name)


def wait_until(probe: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """``eventually`` for sync tests (no event loop)."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return result
