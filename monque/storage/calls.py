"""One implementation of every database operation, for the sync and the async face.

An operation is a generator that yields ``Call``s (a pymongo ``Collection`` method and its
arguments) and receives each result, so its logic (retries on duplicate keys, follow-up reads)
is written once. ``JobCollection`` executes calls on a sync ``Collection`` (directly, or on a
thread when awaited) or an ``AsyncCollection``; the two driver APIs share method names.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection

from monque.connection import DatabaseHandle
from monque.errors import MonqueError
from monque.threads import in_daemon_thread

__all__ = ["Call", "JobCollection", "Operation"]

R = TypeVar("R")
Operation = Generator["Call", Any, R]


@dataclass(frozen=True)
class Call:
    """A pymongo collection method call; ``find`` results are returned as a list, the
    pseudo-method ``aggregate_list`` runs ``aggregate`` and returns its documents, and
    ``command`` runs a database command (``hello``) on the collection's database."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class JobCollection:
    """The jobs collection behind either driver."""

    def __init__(self, database: DatabaseHandle, name: str) -> None:
        self.database = database
        self.collection: Collection[dict[str, Any]] | AsyncCollection[dict[str, Any]] = database[
            name
        ]
        self.is_async = isinstance(self.collection, AsyncCollection)

    def call_sync(self, call: Call) -> Any:
        if self.is_async:
            raise MonqueError(
                "this Monque was built on an async database handle; await the async methods "
                "(the *_sync methods need a sync pymongo, motor or mongoengine handle)"
            )
        sync = cast("Collection[dict[str, Any]]", self.collection)
        if call.method == "aggregate_list":
            return list(sync.aggregate(*call.args, **call.kwargs))
        if call.method == "command":
            return sync.database.command(*call.args, **call.kwargs)
        if call.method == "list_indexes":
            return list(sync.list_indexes())
        method = getattr(self.collection, call.method)
        result = method(*call.args, **call.kwargs)
        return list(result) if call.method == "find" else result

    async def call(self, call: Call) -> Any:
        if not self.is_async:
            # Sync driver off the event loop (the trade motor makes for every call), on a
            # daemon thread: a call blocked on a dead server never holds the process at exit.
            return await in_daemon_thread(self.call_sync, call, name="monque-db")
        native = cast("AsyncCollection[dict[str, Any]]", self.collection)
        if call.method == "aggregate_list":
            cursor = await native.aggregate(*call.args, **call.kwargs)
            return await cursor.to_list()
        if call.method == "command":
            return await native.database.command(*call.args, **call.kwargs)
        if call.method == "list_indexes":
            return await (await native.list_indexes()).to_list()
        method = getattr(self.collection, call.method)
        if call.method == "find":
            return await method(*call.args, **call.kwargs).to_list()
        return await method(*call.args, **call.kwargs)

    async def call_count(self, flt: dict[str, Any]) -> int:
        count: int = await self.call(Call("count_documents", (flt,)))
        return count

    def run_sync(self, operation: Operation[R]) -> R:
        """Drive an operation to its result with blocking calls."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = operation.throw(error) if error is not None else operation.send(result)
            except StopIteration as stop:
                value: R = stop.value
                return value
            result, error = None, None
            try:
                result = self.call_sync(step)
            except Exception as exc:
                error = exc

    async def run(self, operation: Operation[R]) -> R:
        """Drive an operation to its result with awaited calls."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = operation.throw(error) if error is not None else operation.send(result)
            except StopIteration as stop:
                value: R = stop.value
                return value
            result, error = None, None
            try:
                result = await self.call(step)
            except Exception as exc:
                error = exc
