"""The test harness reaches a real wire-protocol server through every accepted driver."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import OperationFailure

from monque.testing import fail_command


def test_sync_pymongo_roundtrip(mongo_db: Database[dict[str, Any]]) -> None:
    mongo_db.things.insert_one({"_id": 1, "n": 1})
    assert mongo_db.things.find_one({"_id": 1}) == {"_id": 1, "n": 1}


async def test_async_pymongo_roundtrip(async_mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    await async_mongo_db.things.insert_one({"_id": 2, "n": 2})
    assert await async_mongo_db.things.find_one({"_id": 2}) == {"_id": 2, "n": 2}


async def test_motor_roundtrip(mongodb_uri: str, mongo_db_name: str) -> None:
    motor_asyncio = pytest.importorskip("motor.motor_asyncio")
    client = motor_asyncio.AsyncIOMotorClient(mongodb_uri)
    try:
        db = client[mongo_db_name]
        await db.things.insert_one({"_id": 3})
        assert await db.things.count_documents({}) == 1
    finally:
        client.close()


def test_mongoengine_get_db(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    mongoengine = pytest.importorskip("mongoengine")
    from mongoengine.connection import disconnect, get_db

    alias = f"harness-{mongo_db_name}"
    mongoengine.connect(db=mongo_db_name, host=mongodb_uri, alias=alias)
    try:
        db = get_db(alias)
        assert isinstance(db, Database)
        db.things.insert_one({"_id": 4})
        assert mongo_client[mongo_db_name].things.count_documents({}) == 1
    finally:
        disconnect(alias)
        mongo_client.drop_database(mongo_db_name)


def test_embedded_server_is_a_replica_set(
    mongo_client: MongoClient[dict[str, Any]], mongodb_server: object
) -> None:
    if mongodb_server is None:
        pytest.skip("MONGODB_URI set: the topology is the user's")
    hello = mongo_client.admin.command("hello")
    assert hello.get("setName"), "change streams need a replica set"


def test_fail_command_failpoint(
    mongo_client: MongoClient[dict[str, Any]], mongo_db: Database[dict[str, Any]]
) -> None:
    mongo_db.things.insert_one({"_id": 5})
    with fail_command(mongo_client, ["find"], error_code=2, error_labels=[]):
        with pytest.raises(OperationFailure) as excinfo:
            mongo_db.things.find_one({"_id": 5})
        assert excinfo.value.code == 2
    assert mongo_db.things.find_one({"_id": 5}) == {"_id": 5}
