"""Helpers the monque_di test modules share: the app containers, started and torn down."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from dependency_injector import providers
from pymongo import AsyncMongoClient, MongoClient

from monque import Monque
from tests.conftest import FAST
from tests.di_app import jobs
from tests.di_app.container import AppContainer, SyncAppContainer


def config(db_name: str, **extra: Any) -> dict[str, Any]:
    return {"monque": {"database": db_name, **FAST, **extra}}


def reset_jobs() -> None:
    """Clear what the di_app job classes recorded in earlier tests."""
    jobs.WithSession.used.clear()
    jobs.HoldSession.seen.clear()
    jobs.HoldSession.gate.clear()
    jobs.HoldSession.holding.clear()
    jobs.SessionInInit.seen.clear()
    jobs.NightlyReport.runs.clear()


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def async_app(uri: str, db_name: str, **extra: Any) -> AsyncIterator[AppContainer]:
    """The async app on its own AsyncMongoClient, wired; shut down and unwired after."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    container = AppContainer(connection=providers.Object(client))
    container.config.from_dict(config(db_name, **extra))
    container.wire(modules=[jobs])
    reset_jobs()
    try:
        yield container
    finally:
        jobs.HoldSession.gate.set()  # never leave a handler waiting
        await maybe_await(container.shutdown_resources())
        container.unwire()
        await client.close()


@contextmanager
def sync_app(uri: str, db_name: str, **extra: Any) -> Iterator[SyncAppContainer]:
    """The sync app on a pymongo MongoClient, wired; shut down and unwired after."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    container = SyncAppContainer(connection=providers.Object(client))
    container.config.from_dict(config(db_name, **extra))
    container.wire(modules=[jobs])
    reset_jobs()
    try:
        yield container
    finally:
        jobs.HoldSession.gate.set()
        container.shutdown_resources()
        container.unwire()
        client.close()


async def start(container: AppContainer) -> Monque:
    await maybe_await(container.init_resources())
    monque: Monque = await container.monque.engine()
    return monque
