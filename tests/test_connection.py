"""Every accepted handle kind normalizes to a native handle, and works end to end."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque import Job, Monque, normalize_database
from monque.testing import drain
from tests.conftest import FAST


def test_sync_database_and_client(
    mongo_db: Database[dict[str, Any]], mongo_client: MongoClient[dict[str, Any]], mongodb_uri: str
) -> None:
    assert normalize_database(mongo_db) is mongo_db
    assert normalize_database(mongo_client, "x").name == "x"
    with_default: MongoClient[dict[str, Any]] = MongoClient(
        mongodb_uri.replace("/?", "/fromuri?"), connect=False
    )
    try:
        assert normalize_database(with_default).name == "fromuri"
    finally:
        with_default.close()
    with pytest.raises(TypeError, match="without a database"):
        normalize_database(mongo_client)


async def test_async_database_and_client(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    async_mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    assert normalize_database(async_mongo_db) is async_mongo_db
    db = normalize_database(async_mongo_client, "y")
    assert isinstance(db, AsyncDatabase) and db.name == "y"


@pytest.mark.parametrize("bad", [42, None, object(), {"uri": "mongodb://x"}])
def test_anything_else_names_the_accepted_kinds(bad: object) -> None:
    with pytest.raises(TypeError, match="pymongo Database"):
        normalize_database(bad)


async def test_motor_client_and_database_end_to_end(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    motor_asyncio = pytest.importorskip("motor.motor_asyncio")
    client = motor_asyncio.AsyncIOMotorClient(mongodb_uri)
    try:
        assert isinstance(normalize_database(client, mongo_db_name), Database)
        monque = Monque(client[mongo_db_name], **FAST)
        ran: list[Any] = []

        @monque.worker("motor-job")
        async def handler(job: Job[Any]) -> None:
            ran.append(job.data)

        await monque.enqueue("motor-job", {"via": "motor"})
        await drain(monque)
        await monque.stop()
        assert ran == [{"via": "motor"}]
    finally:
        client.close()
    assert mongo_db.monque_jobs.count_documents({"status": "completed"}) == 1


def test_mongoengine_alias_end_to_end(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    mongoengine = pytest.importorskip("mongoengine")
    from mongoengine.connection import disconnect

    alias = f"monque-{mongo_db_name}"
    mongoengine.connect(
        db=mongo_db_name, host=mongodb_uri, alias=alias, uuidRepresentation="standard"
    )
    try:
        monque = Monque(alias, **FAST)
        assert isinstance(monque.database, Database) and monque.database.name == mongo_db_name
        job = monque.enqueue_sync("from-flask", {"user": 7})
        assert mongo_db.monque_jobs.find_one({"_id": job.id}) is not None
        with pytest.raises(TypeError, match="no mongoengine connection"):
            Monque("not-an-alias")
    finally:
        disconnect(alias)


def test_a_client_passed_in_is_not_closed(
    mongo_client: MongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    monque = Monque(mongo_client, database=mongo_db_name, **FAST)
    monque.enqueue_sync("x")
    del monque
    assert mongo_client[mongo_db_name].monque_jobs.count_documents({}) == 1
    mongo_client.drop_database(mongo_db_name)
