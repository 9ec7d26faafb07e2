"""pytest fixtures giving each test its own database on a real MongoDB wire server.

``MONGODB_URI`` set: that server (e.g. ``docker compose up -d``). Unset: the embedded SecantusDB
server, started once per session in its own process and stopped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque.testing.server import EmbeddedMongo

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - async fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

# Fast failover detection: with pymongo's default 10 s heartbeat a retried "not primary"
# error waits that long before the retry (see the embedded server notes).
CLIENT_OPTIONS: dict[str, Any] = {"heartbeatFrequencyMS": 500, "serverSelectionTimeoutMS": 10_000}


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[EmbeddedMongo | None]:
    """The embedded server this session started, or None when ``MONGODB_URI`` is set."""
    if os.environ.get("MONGODB_URI"):
        yield None
        return
    server = EmbeddedMongo().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mongodb_uri(mongodb_server: EmbeddedMongo | None) -> str:
    """Connection string of the server the tests use."""
    if mongodb_server is None:
        return os.environ["MONGODB_URI"]
    return mongodb_server.uri


@pytest.fixture(scope="session")
def mongo_client(mongodb_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """A sync pymongo client for the whole session."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, **CLIENT_OPTIONS)
    yield client
    client.close()


@pytest.fixture
def mongo_db_name() -> str:
    """A database name no other test uses."""
    return f"monque_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mongo_db(
    mongo_client: MongoClient[dict[str, Any]], mongo_db_name: str
) -> Iterator[Database[dict[str, Any]]]:
    """A fresh database (sync pymongo), dropped after the test."""
    yield mongo_client[mongo_db_name]
    mongo_client.drop_database(mongo_db_name)


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def async_mongo_client(
        mongodb_uri: str,
    ) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
        """A PyMongo async client bound to the test's event loop."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
        yield client
        await client.close()

    @pytest_asyncio.fixture
    async def async_mongo_db(
        async_mongo_client: AsyncMongoClient[dict[str, Any]],
        mongo_client: MongoClient[dict[str, Any]],
        mongo_db_name: str,
    ) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
        """The test's database through the async driver (same name as ``mongo_db``)."""
        yield async_mongo_client[mongo_db_name]
        mongo_client.drop_database(mongo_db_name)
