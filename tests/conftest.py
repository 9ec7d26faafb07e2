from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque import Monque

# Short intervals so tests observe retries, leases and recovery within a second or two.
FAST: dict[str, Any] = {
    "poll_interval": 0.05,
    "heartbeat_interval": 0.2,
    "lock_timeout": 1.0,
    "recovery_interval": 0.2,
    "backoff_base": 0.05,
    "shutdown_timeout": 5,
    "ts_shutdown_timeout": 1,
}

MakeMonque = Callable[..., Monque]


@pytest_asyncio.fixture
async def make_monque(
    mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> AsyncIterator[MakeMonque]:
    """Build engines on the test's database: ``handle="async"`` (default) or ``"sync"``."""
    created: list[Monque] = []

    def factory(handle: str = "async", **options: Any) -> Monque:
        db = async_mongo_db if handle == "async" else mongo_db
        monque = Monque(db, **{**FAST, **options})
        created.append(monque)
        return monque

    yield factory
    for monque in created:
        await monque.stop(timeout=2)


@pytest.fixture(params=["async", "sync"])
def handle(request: pytest.FixtureRequest) -> str:
    """Run a test on both native handles: AsyncDatabase and a sync pymongo Database."""
    value: str = request.param
    return value
