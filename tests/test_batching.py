"""Batched claims and result writes: fewer round trips, every transition still owner-guarded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from monque import Events, Job, Monque
from monque.lifecycle import new_document
from monque.storage import jobs as ops
from monque.storage.calls import Call, JobCollection
from tests.helpers import Recorder


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"hello", "isMaster", "ping", "endSessions"}:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def counted(
    mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> Iterator[tuple[Database[dict[str, Any]], Commands]]:
    listener = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, event_listeners=[listener])
    yield client[mongo_db.name], listener
    client.close()


def store(db: Database[dict[str, Any]], name: str, count: int, **kw: Any) -> list[Any]:
    at = datetime.now(timezone.utc) - timedelta(seconds=1)
    docs = [new_document(name, i, now=at, run_at=at, **kw) for i in range(count)]
    db.monque_jobs.insert_many(docs)
    return [doc["_id"] for doc in docs]


def drive(coll: JobCollection, operation: Any, before_step: dict[int, Any] | None = None) -> Any:
    """Run an operation step by step, calling ``before_step[n]()`` before its n-th call."""
    result: Any = None
    step = 0
    while True:
        try:
            call: Call = operation.send(result)
        except StopIteration as stop:
            return stop.value
        if before_step and step in before_step:
            before_step[step]()
        result = coll.call_sync(call)
        step += 1


def test_batch_claim_takes_several_jobs_in_two_commands(
    counted: tuple[Database[dict[str, Any]], Commands],
) -> None:
    db, listener = counted
    store(db, "a", 6)
    listener.names.clear()
    docs, exhausted = drive(
        JobCollection(db, "monque_jobs"),
        ops.claim_batch({"a": 4}, 100, "me", datetime.now(timezone.utc), 30),
    )
    assert len(docs) == 4 and not exhausted
    assert listener.names == ["find", "update"]
    assert db.monque_jobs.count_documents({"status": "processing", "claimedBy": "me"}) == 4
    assert all(doc["status"] == "processing" and doc["claimedBy"] == "me" for doc in docs)


def test_batch_claim_respects_per_name_slots_and_the_limit(
    mongo_db: Database[dict[str, Any]],
) -> None:
    store(mongo_db, "a", 5)
    store(mongo_db, "b", 5)
    coll = JobCollection(mongo_db, "monque_jobs")
    now = datetime.now(timezone.utc)
    slots, limit, names = {"a": 1, "b": 5}, 3, []
    while limit:  # as the worker does: claim again for the slots still free
        docs, exhausted = drive(coll, ops.claim_batch(slots, limit, "me", now, 30))
        assert docs and not exhausted and len(docs) <= limit
        for doc in docs:
            names.append(doc["name"])
            slots[doc["name"]] -= 1
        limit -= len(docs)
    assert len(names) == 3 and names.count("a") <= 1
    assert mongo_db.monque_jobs.count_documents({"status": "processing"}) == 3


def test_batch_claim_skips_a_job_changed_between_read_and_claim(
    mongo_db: Database[dict[str, Any]],
) -> None:
    """Another worker takes one candidate, and one is rescheduled, after this worker's read."""
    ids = store(mongo_db, "a", 3)
    coll = JobCollection(mongo_db, "monque_jobs")
    now = datetime.now(timezone.utc)

    def interfere() -> None:
        mongo_db.monque_jobs.update_one(
            {"_id": ids[0]},
            {"$set": {"status": "processing", "claimedBy": "other", "updatedAt": now}},
        )
        mongo_db.monque_jobs.update_one(
            {"_id": ids[1]}, {"$set": {"data": "changed", "updatedAt": now}}
        )

    docs, exhausted = drive(coll, ops.claim_batch({"a": 3}, 3, "me", now, 30), {1: interfere})
    assert [doc["_id"] for doc in docs] == [ids[2]]
    assert not exhausted
    assert mongo_db.monque_jobs.find_one({"_id": ids[0]})["claimedBy"] == "other"  # type: ignore[index]
    stale = mongo_db.monque_jobs.find_one({"_id": ids[1]})
    assert stale is not None and stale["status"] == "pending"  # left for a fresh read


def test_batch_claim_reports_when_due_jobs_ran_out(mongo_db: Database[dict[str, Any]]) -> None:
    store(mongo_db, "a", 2)
    coll = JobCollection(mongo_db, "monque_jobs")
    docs, exhausted = drive(
        coll, ops.claim_batch({"a": 5}, 100, "me", datetime.now(timezone.utc), 30)
    )
    assert len(docs) == 2 and exhausted
    assert drive(coll, ops.claim_batch({"a": 1}, 1, "me", datetime.now(timezone.utc), 30)) == (
        [],
        True,
    )


def test_result_writes_in_one_bulk_write_with_per_job_outcome(
    counted: tuple[Database[dict[str, Any]], Commands],
) -> None:
    db, listener = counted
    store(db, "a", 3)
    coll = JobCollection(db, "monque_jobs")
    docs, _ = drive(coll, ops.claim_batch({"a": 3}, 3, "me", datetime.now(timezone.utc), 30))
    lost = docs[1]["_id"]
    db.monque_jobs.update_one({"_id": lost}, {"$set": {"claimedBy": "other"}})
    done = datetime.now(timezone.utc)
    update = {"$set": {"status": "completed", "updatedAt": done}, "$unset": ops.LEASE_FIELDS}
    listener.names.clear()
    writes = [ops.OutcomeWrite(d["_id"], d["claimToken"], update) for d in docs]
    applied = drive(coll, ops.apply_transitions(writes, "me"))
    assert applied == [ops.APPLIED, ops.LOST, ops.APPLIED]
    assert listener.names == ["update", "find"]  # one bulk write; one read to settle the miss
    assert db.monque_jobs.find_one({"_id": lost})["claimedBy"] == "other"  # type: ignore[index]
    # All matched: the read is not needed.
    store(db, "b", 2)
    docs, _ = drive(coll, ops.claim_batch({"b": 2}, 2, "me", datetime.now(timezone.utc), 30))
    listener.names.clear()
    writes = [ops.OutcomeWrite(d["_id"], d["claimToken"], update) for d in docs]
    assert drive(coll, ops.apply_transitions(writes, "me")) == [ops.APPLIED, ops.APPLIED]
    assert listener.names == ["update"]


@pytest.mark.parametrize("idle_names", [0, 9])
async def test_a_burst_costs_well_under_two_commands_per_job(
    counted: tuple[Database[dict[str, Any]], Commands], idle_names: int
) -> None:
    """The floor loop needs a claim and a completion per job; batches share both. Names with
    nothing to do (most of an app's, at any moment) add no reads per batch."""
    db, listener = counted
    engine = Monque(db, poll_interval=0.5, worker_concurrency=5)
    events = Recorder().listen(engine, Events.JOB_COMPLETE)

    @engine.worker("burst")
    async def burst(job: Job[Any]) -> None:
        return None

    for i in range(idle_names):
        engine.worker(f"idle-{i}", burst)

    await engine.initialize()
    store(db, "burst", 60)
    listener.names.clear()
    await engine.start()
    try:
        await events.wait_for(Events.JOB_COMPLETE, 60)
    finally:
        await engine.stop()
    per_job = sum(n in {"find", "update", "findAndModify"} for n in listener.names) / 60
    print(f"commands per job with {idle_names} idle names: {per_job:.2f}")
    # About 3 commands per batch of 5 (a read, a claim, the results), plus, with idle names, a
    # read of them at each poll; the old runtime asked the idle names again after every batch:
    # 1.3 per job with 9 of them.
    assert per_job < (0.8 if idle_names == 0 else 1.0), listener.names
    assert db.monque_jobs.count_documents({"status": "completed"}) == 60


def test_next_due_reads_the_earliest_date_and_skips_malformed_documents(
    mongo_db: Database[dict[str, Any]],
) -> None:
    coll = JobCollection(mongo_db, "monque_jobs")
    assert drive(coll, ops.next_due(["a"])) is None
    now = datetime.now(timezone.utc).replace(microsecond=0)
    mongo_db.monque_jobs.insert_many(
        [
            {"name": "a", "status": "pending", "nextRunAt": None},
            {"name": "a", "status": "pending", "nextRunAt": "soon"},
            new_document("a", 1, now=now, run_at=now + timedelta(seconds=30)),
            new_document("b", 2, now=now, run_at=now + timedelta(seconds=10)),
            new_document("c", 3, now=now, run_at=now + timedelta(seconds=5)),
        ]
    )
    assert drive(coll, ops.next_due(["a", "b"])) == now + timedelta(seconds=10)
    assert drive(coll, ops.next_due(["a"])) == now + timedelta(seconds=30)
