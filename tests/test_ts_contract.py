"""Leases the TypeScript Monque understands, and TS claims Python judges by TS's own fields.

Documents here are written the way ``@monque/core`` 1.10.1 writes them (``acquireJob``: status,
claimedBy, lockedAt, lastHeartbeat, heartbeatInterval; no ``lockExpiresAt``, no
``claimToken``); tests/interop runs the real library for the same cases.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from monque import Events, IndexConflictError, Job
from monque.lifecycle import new_document
from monque.storage import jobs as ops
from monque.testing import fail_command
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def ts_claimed(
    db: Database[dict[str, Any]],
    name: str,
    *,
    heartbeat_age: float | None,
    locked_age: float = 600.0,
    **extra: Any,
) -> ObjectId:
    """A job a TypeScript worker claimed ``locked_age`` s ago, last heartbeat ``heartbeat_age``
    s ago (None: no heartbeat field), heartbeatInterval 1 s."""
    now = datetime.now(timezone.utc)
    doc = new_document(name, {"from": "ts"}, now=now, run_at=now - timedelta(minutes=20))
    del doc["priority"]  # TS writes none
    doc |= {
        "status": "processing",
        "claimedBy": "3f1c2a9e-ts-instance",
        "lockedAt": now - timedelta(seconds=locked_age),
        "heartbeatInterval": 1000,
        "updatedAt": now - timedelta(seconds=locked_age),
        **extra,
    }
    if heartbeat_age is not None:
        doc["lastHeartbeat"] = now - timedelta(seconds=heartbeat_age)
    db.monque_jobs.insert_one(doc)
    job_id: ObjectId = doc["_id"]
    return job_id


# -- the pure rules -----------------------------------------------------------------------------


def test_a_lease_counts_only_for_the_claim_that_wrote_it() -> None:
    token = ops.new_token("py-1")
    assert ops.lease_of_claim({"claimedBy": "py-1", "claimToken": token})
    # A TS worker claimed the job after the Python claim: the token's owner is not the holder.
    assert not ops.lease_of_claim({"claimedBy": "ts-uuid", "claimToken": token})
    # TS recovery unset claimedBy and left the token.
    assert not ops.lease_of_claim({"claimToken": token})
    assert not ops.lease_of_claim({"claimedBy": "py-1"})
    # An owner id that is a prefix of another's does not pass for it, "/" in ids included.
    assert not ops.lease_of_claim({"claimedBy": "py", "claimToken": ops.new_token("py-1")})
    assert not ops.lease_of_claim({"claimedBy": "w", "claimToken": ops.new_token("w/1")})
    assert ops.lease_of_claim({"claimedBy": "w/1", "claimToken": ops.new_token("w/1")})


@pytest.mark.parametrize(
    ("fields", "expired"),
    [
        ({"lastHeartbeat": NOW - timedelta(seconds=5), "heartbeatInterval": 30_000}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=89), "heartbeatInterval": 30_000}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=91), "heartbeatInterval": 30_000}, True),
        # A short TS heartbeat interval never makes it shorter than our own lease.
        ({"lastHeartbeat": NOW - timedelta(seconds=20), "heartbeatInterval": 1000}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=31), "heartbeatInterval": 1000}, True),
        # Stored as TS was configured: a numeric string counts; garbage means TS's 30 s.
        ({"lastHeartbeat": NOW - timedelta(seconds=31), "heartbeatInterval": "3000"}, True),
        ({"lastHeartbeat": NOW - timedelta(seconds=29), "heartbeatInterval": "30000"}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=89), "heartbeatInterval": "x"}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=89)}, False),
        ({"lastHeartbeat": NOW - timedelta(seconds=91), "heartbeatInterval": 0}, True),
        # No heartbeat: TS's own rule, lockedAt older than its lockTimeout.
        ({"lockedAt": NOW - timedelta(minutes=29)}, False),
        ({"lockedAt": NOW - timedelta(minutes=31)}, True),
        ({}, True),
    ],
)
def test_a_foreign_claim_is_judged_by_the_fields_its_owner_keeps_fresh(
    fields: dict[str, Any], expired: bool
) -> None:
    assert ops.foreign_lease_expired(fields, NOW, 30.0, 1800.0) is expired


def test_a_stopping_typescript_worker_is_given_its_shutdown_timeout() -> None:
    """TS stop() ends heartbeats first, then waits up to shutdownTimeout for its handlers."""
    beat = {"lastHeartbeat": NOW - timedelta(seconds=40), "heartbeatInterval": 5000}
    assert ops.foreign_lease_expired(beat, NOW, 30.0, 1800.0, ts_shutdown=0)
    assert not ops.foreign_lease_expired(beat, NOW, 30.0, 1800.0, ts_shutdown=30)
    late = {**beat, "lastHeartbeat": NOW - timedelta(seconds=61)}
    assert ops.foreign_lease_expired(late, NOW, 30.0, 1800.0, ts_shutdown=30)


# -- against the server ---------------------------------------------------------------------------


async def test_a_job_an_abandoned_typescript_worker_held_is_recovered_once(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """Case 1 of issue 12: TS documents have no lockExpiresAt; Python never recovered them."""
    monque = make_monque(lock_timeout=2.0, heartbeat_interval=0.5)
    events = Recorder().listen(monque, Events.JOB_RECOVERED, Events.JOB_COMPLETE)
    ran: list[ObjectId] = []
    monque.worker("work", lambda job: ran.append(job.id))
    dead = ts_claimed(mongo_db, "work", heartbeat_age=60)
    # Nothing renews this one: a 30 s interval keeps it alive however slowly the engine starts.
    alive = ts_claimed(mongo_db, "work", heartbeat_age=0.0, heartbeatInterval=30_000)
    no_heartbeat_young = ts_claimed(mongo_db, "work", heartbeat_age=None, locked_age=60)
    await monque.start()
    ((recovered,),) = await events.wait_for(Events.JOB_RECOVERED)
    assert recovered.id == dead
    await events.wait_for(Events.JOB_COMPLETE)
    assert ran == [dead]
    doc = mongo_db.monque_jobs.find_one({"_id": dead})
    assert doc is not None and doc["status"] == "completed" and doc["failCount"] == 1
    assert "3f1c2a9e-ts-instance" in doc["failReason"]
    for live in (alive, no_heartbeat_young):
        still = mongo_db.monque_jobs.find_one({"_id": live})
        assert still is not None and still["status"] == "processing"
        assert still["claimedBy"] == "3f1c2a9e-ts-instance"


async def test_no_heartbeat_falls_back_to_the_typescript_lock_timeout(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(ts_lock_timeout=30)
    events = Recorder().listen(monque, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    old = ts_claimed(mongo_db, "work", heartbeat_age=None, locked_age=31)
    young = ts_claimed(mongo_db, "work", heartbeat_age=None, locked_age=20)
    await monque.start()
    ((done, *_),) = await events.wait_for(Events.JOB_COMPLETE)
    assert done.id == old
    still = mongo_db.monque_jobs.find_one({"_id": young})
    assert still is not None and still["status"] == "processing"


async def test_a_stale_python_lease_under_a_live_typescript_claim_is_not_judged(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """Case 2: TS recovery left a dead Python claim's lockExpiresAt behind; a TS worker then
    claimed the job. A Python sweep "recovered" it from the live TS worker."""
    monque = make_monque()
    monque.worker("work", lambda job: None)
    past = datetime.now(timezone.utc) - timedelta(minutes=40)
    job_id = ts_claimed(
        mongo_db,
        "work",
        heartbeat_age=0.0,
        locked_age=0.0,
        claimToken=ops.new_token("dead-python-worker"),
        lockExpiresAt=past,
        heartbeatInterval=30_000,  # nothing renews it: alive however slowly the engine starts
    )
    await monque.start()

    def lease_dropped() -> bool:
        doc = mongo_db.monque_jobs.find_one({"_id": job_id})
        return doc is not None and "lockExpiresAt" not in doc

    await eventually(lease_dropped, message="the stale lease removed")
    await monque.stop()
    doc = mongo_db.monque_jobs.find_one({"_id": job_id})
    assert doc is not None and doc["status"] == "processing"
    assert doc["claimedBy"] == "3f1c2a9e-ts-instance" and "claimToken" not in doc
    assert doc.get("failCount", 0) == 0


async def test_heartbeats_keep_locked_at_fresh_for_typescript_recovery(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """Case 3: TS start-up recovery resets processing jobs whose lockedAt is older than its
    lockTimeout; a long Python run must look alive to it."""
    monque = make_monque()
    release = asyncio.Event()
    started: list[Job[Any]] = []

    async def long(job: Job[Any]) -> None:
        started.append(job)
        await asyncio.wait_for(release.wait(), 20)

    monque.worker("long", long)
    job = await monque.enqueue("long")
    await monque.start()
    await eventually(lambda: started)
    first = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert first is not None

    def renewed() -> bool:
        doc = mongo_db.monque_jobs.find_one({"_id": job.id})
        return doc is not None and doc["lockedAt"] > first["lockedAt"]

    await eventually(renewed, message="lockedAt renewed by a heartbeat")
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["lastHeartbeat"] == doc["lockedAt"] and doc["lockedAt"] > doc["startedAt"]
    release.set()
    await monque.stop()


# -- priority -----------------------------------------------------------------------------------


def ts_pending(db: Database[dict[str, Any]], name: str, data: Any) -> ObjectId:
    """A pending job as the TypeScript Monque's enqueue() stores it: no priority field."""
    now = datetime.now(timezone.utc)
    doc = new_document(name, data, now=now, run_at=now - timedelta(seconds=1))
    del doc["priority"]
    db.monque_jobs.insert_one(doc)
    job_id: ObjectId = doc["_id"]
    return job_id


@pytest.mark.parametrize("when", ["before-start", "while-running"])
async def test_a_job_without_priority_ranks_as_zero(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], when: str
) -> None:
    """Case 7: missing priority sorted below even negative priorities."""
    monque = make_monque()
    order: list[Any] = []
    gate = asyncio.Event()

    async def run(job: Job[Any]) -> None:
        order.append(job.data)
        if job.data == "blocker":
            await asyncio.wait_for(gate.wait(), 10)

    monque.worker("work", run, concurrency=1)
    if when == "while-running":
        await monque.enqueue("work", "blocker")
        await monque.start()
        await eventually(lambda: order == ["blocker"])
    await monque.enqueue("work", "negative", priority=-5)
    ts_pending(mongo_db, "work", "ts-no-priority")
    await monque.enqueue("work", "positive", priority=5)
    if when == "before-start":
        await monque.start()
    else:
        await eventually(
            lambda: mongo_db.monque_jobs.count_documents({"priority": None}) == 0,
            message="the TS job ranked",
        )
        gate.set()
    await eventually(lambda: len([d for d in order if d != "blocker"]) == 3)
    assert [d for d in order if d != "blocker"] == ["positive", "ts-no-priority", "negative"]


# -- one schedule per name ------------------------------------------------------------------------


def ts_schedule(db: Database[dict[str, Any]], name: str, cron: str, **extra: Any) -> ObjectId:
    """A recurring job as the TypeScript Monque's schedule() stores it: no uniqueKey."""
    now = datetime.now(timezone.utc)
    doc = new_document(name, {"by": "ts"}, now=now, run_at=now + timedelta(hours=1))
    del doc["priority"]
    doc |= {"repeatInterval": cron, **extra}
    db.monque_jobs.insert_one(doc)
    job_id: ObjectId = doc["_id"]
    return job_id


async def test_one_schedule_per_name_whichever_side_created_it(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """Case 6: TS stores no uniqueKey, Python keyed on schedule:<name>: two schedules."""
    ts_id = ts_schedule(mongo_db, "nightly", "0 3 * * *")
    monque = make_monque()
    job = await monque.schedule("0 4 * * *", "nightly", {"by": "python"})
    assert job.id == ts_id, "the TS schedule is adopted, not duplicated"
    docs = list(mongo_db.monque_jobs.find({"name": "nightly"}))
    assert len(docs) == 1
    assert docs[0]["uniqueKey"] == "schedule:nightly" and docs[0]["repeatInterval"] == "0 4 * * *"
    assert docs[0]["data"] == {"by": "python"}
    # Again from Python: still one.
    await monque.schedule("0 4 * * *", "nightly")
    assert mongo_db.monque_jobs.count_documents({"name": "nightly"}) == 1


async def test_a_second_keyless_schedule_of_a_name_is_cancelled_not_run_twice(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    mine = await monque.schedule("0 4 * * *", "nightly")
    ts_id = ts_schedule(mongo_db, "nightly", "0 4 * * *")  # a TS app booting without a key
    running = ts_schedule(mongo_db, "nightly", "0 4 * * *", status="processing")
    other_name = ts_schedule(mongo_db, "hourly", "0 * * * *")
    await monque.schedule("0 4 * * *", "nightly")
    statuses = {d["_id"]: d["status"] for d in mongo_db.monque_jobs.find({})}
    assert statuses == {
        mine.id: "pending",
        ts_id: "cancelled",
        running: "processing",  # never taken from under a running worker
        other_name: "pending",
    }
    # With a key of its own, a schedule is another schedule of the name: left alone.
    keyed = await monque.schedule("0 5 * * *", "nightly", unique_key="second")
    assert keyed.id not in statuses


# -- indexes and retention ------------------------------------------------------------------------

TS_UNIQUE: dict[str, Any] = {
    "key": {"name": 1, "uniqueKey": 1},
    "unique": True,
    "partialFilterExpression": {
        "uniqueKey": {"$exists": True},
        "status": {"$in": ["pending", "processing"]},
    },
}


def _indexes_on(db: Database[dict[str, Any]], *fields: str) -> list[str]:
    return [
        name
        for name, info in db.monque_jobs.index_information().items()
        if [f for f, _ in info["key"]] == list(fields)
    ]


@pytest.mark.parametrize("existing_name", ["name_1_uniqueKey_1", "monque_unique"])
async def test_an_equivalent_index_is_used_whatever_its_name(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], existing_name: str
) -> None:
    """Case 9: TS's name_1_uniqueKey_1 and Python's index were the same index under two
    names; on mongod the second createIndexes fails with IndexOptionsConflict."""
    mongo_db.monque_jobs.create_index(
        list(TS_UNIQUE["key"].items()),
        name=existing_name,
        unique=True,
        partialFilterExpression=TS_UNIQUE["partialFilterExpression"],
    )
    monque = make_monque()
    await monque.initialize()
    assert _indexes_on(mongo_db, "name", "uniqueKey") == [existing_name]
    first = await monque.enqueue("job", unique_key="k")
    again = await monque.enqueue("job", unique_key="k")
    assert first.id == again.id


async def test_an_index_in_the_way_is_a_clear_error_naming_both(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    mongo_db.monque_jobs.create_index([("name", 1), ("uniqueKey", 1)], name="name_1_uniqueKey_1")
    with pytest.raises(IndexConflictError) as excinfo:
        await make_monque().initialize()
    message = str(excinfo.value)
    assert "name_1_uniqueKey_1" in message and "unique" in message
    assert "dropIndex('name_1_uniqueKey_1')" in message and "create_indexes=False" in message
    assert excinfo.value.existing == "name_1_uniqueKey_1"
    assert mongo_db.monque_jobs.count_documents({}) == 0


async def test_the_typescript_monque_finds_our_unique_index_as_its_own(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """TS's createIndexes names its index name_1_uniqueKey_1; ours has that name and spec,
    so its createIndexes after ours is a no-op instead of IndexOptionsConflict."""
    await make_monque().initialize()
    mongo_db.monque_jobs.create_index(  # as TS's createIndexes sends it
        list(TS_UNIQUE["key"].items()),
        unique=True,
        partialFilterExpression=TS_UNIQUE["partialFilterExpression"],
        background=True,
    )
    assert _indexes_on(mongo_db, "name", "uniqueKey") == ["name_1_uniqueKey_1"]


async def test_retention_never_deletes_a_live_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """Case 8: TS retryJob leaves expireAt behind; a TTL index over every status deleted the
    retried, pending job. The index now covers finished jobs only, and an index of the
    earlier definition is replaced."""
    mongo_db.monque_jobs.create_index(
        [("expireAt", 1)], name="monque_retention", expireAfterSeconds=0
    )
    monque = make_monque(retention={"completed": 60})
    await monque.initialize()
    index = mongo_db.monque_jobs.index_information()["monque_retention"]
    assert index["expireAfterSeconds"] == 0
    assert index["partialFilterExpression"] == {
        "status": {"$in": ["completed", "failed", "cancelled"]}
    }
    await make_monque(retention={"completed": 60}).initialize()  # idempotent


async def test_twenty_five_keyless_schedules_become_one_in_one_call(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """TS inserts a key-less schedule at every deploy: 25 of them, one schedule() call."""
    ids = [ts_schedule(mongo_db, "nightly", "0 4 * * *") for _ in range(25)]
    job = await make_monque().schedule("0 4 * * *", "nightly")
    assert job.id == ids[0], "the oldest is adopted"
    active = mongo_db.monque_jobs.count_documents({"name": "nightly", "status": "pending"})
    assert active == 1
    assert mongo_db.monque_jobs.count_documents({"status": "cancelled"}) == 24


async def test_a_pending_job_left_with_a_cancel_request_is_cancelled_by_the_sweep(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """TS ignores cancelRequested on a run it holds and keeps it when it reschedules the
    job: {status: pending, cancelRequested: true}, which no Python worker claims."""
    left = ts_schedule(mongo_db, "report", "*/5 * * * *", cancelRequested=True)
    plain = ts_schedule(mongo_db, "report", "*/10 * * * *")
    monque = make_monque()
    monque.worker("report", lambda job: None)
    await monque.start()
    await eventually(
        lambda: (mongo_db.monque_jobs.find_one({"_id": left}) or {}).get("status") == "cancelled",
        message="the sweep cancelled it",
    )
    await monque.stop()
    doc = mongo_db.monque_jobs.find_one({"_id": left})
    assert doc is not None and "cancelledAt" in doc and "cancelRequested" not in doc
    other = mongo_db.monque_jobs.find_one({"_id": plain})
    assert other is not None and other["status"] == "pending"


async def test_a_conflict_the_server_reports_names_the_index_in_the_way(
    make_monque: MakeMonque,
    mongo_db: Database[dict[str, Any]],
    mongo_client: MongoClient[dict[str, Any]],
) -> None:
    """mongod refuses the same key with other options under another name (85/86); the
    embedded server accepts it, so the refusal comes from a failpoint here."""
    mongo_db.monque_jobs.create_index(
        [("name", 1), ("status", 1), ("nextRunAt", 1)], name="custom_due", unique=True
    )
    fault: dict[str, Any] = {"times": 2, "error_labels": []}
    with (
        fail_command(mongo_client, ["createIndexes"], error_code=85, **fault),
        pytest.raises(IndexConflictError) as named,
    ):
        await make_monque(handle="sync").initialize()
    assert named.value.existing == "custom_due"
    assert "dropIndex('custom_due')" in str(named.value)
    mongo_db.monque_jobs.drop_index("custom_due")
    with (
        fail_command(mongo_client, ["createIndexes"], error_code=86, **fault),
        pytest.raises(IndexConflictError, match="an existing index") as unnamed,
    ):
        await make_monque(handle="sync").initialize()
    assert unnamed.value.existing is None
    await make_monque().initialize()  # and without the fault it starts
