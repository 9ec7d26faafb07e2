"""Leases: heartbeats renew them, expired ones are recovered continuously and count as attempts."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from monque import Events, InstanceIdConflictError, Job
from monque.lifecycle import new_document
from monque.storage import jobs as ops
from monque.testing import drain
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually


def _orphan(
    db: Database[dict[str, Any]], name: str, *, expired: bool = True, **extra: Any
) -> ObjectId:
    """A job claimed by a worker that died (or, with expired=False, still lives)."""
    now = datetime.now(timezone.utc)
    doc = new_document(name, {"orphan": True}, now=now, run_at=now - timedelta(minutes=1))
    expiry = now - timedelta(seconds=5) if expired else now + timedelta(minutes=5)
    doc |= {
        "status": "processing",
        "claimedBy": "dead-worker",
        "claimToken": ops.new_token("dead-worker"),
        "lockedAt": now - timedelta(minutes=1),
        "lastHeartbeat": now - timedelta(minutes=1),
        "lockExpiresAt": expiry,
        **extra,
    }
    db.monque_jobs.insert_one(doc)
    job_id: ObjectId = doc["_id"]
    return job_id


async def test_an_expired_lease_is_recovered_and_the_job_runs_again(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_RECOVERED, Events.JOB_COMPLETE)
    ran: list[ObjectId] = []
    monque.worker("work", lambda job: ran.append(job.id))
    job_id = _orphan(mongo_db, "work")
    live = _orphan(mongo_db, "work", expired=False)
    await monque.start()
    ((recovered,),) = await events.wait_for(Events.JOB_RECOVERED)
    assert recovered.id == job_id
    await events.wait_for(Events.JOB_COMPLETE)
    assert ran == [job_id]
    doc = mongo_db.monque_jobs.find_one({"_id": job_id})
    assert doc is not None and doc["status"] == "completed"
    assert doc["failCount"] == 1, "a lost run counts as an attempt"
    assert "worker lost" in doc["failReason"] and "dead-worker" in doc["failReason"]
    still = mongo_db.monque_jobs.find_one({"_id": live})
    assert still is not None and still["status"] == "processing", "a live lease is left alone"


async def test_a_job_that_keeps_killing_its_worker_ends_failed(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(max_retries=3)
    events = Recorder().listen(monque, Events.JOB_RECOVERED)
    job_id = _orphan(mongo_db, "poison", failCount=2)
    await monque.start()  # no worker for "poison": recovery is global
    await events.wait_for(Events.JOB_RECOVERED)
    doc = mongo_db.monque_jobs.find_one({"_id": job_id})
    assert doc is not None and doc["status"] == "failed" and doc["failCount"] == 3


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_heartbeats_keep_a_long_job_from_other_instances(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], kind: str
) -> None:
    """A job 2.5 times longer than the lease runs once, though another instance sweeps."""
    runs: list[str] = []
    # A 2 s lease, not the suite's 1 s: on a loaded CI host one renewal (three round trips
    # after each 0.2 s nap) can take longer than 0.8 s, and recovery is then right to act.
    engines = [
        make_monque(lock_timeout=2.0, heartbeat_interval=0.2, recovery_interval=0.1)
        for _ in range(2)
    ]
    recorders = [Recorder().listen(m, Events.JOB_RECOVERED, Events.JOB_LOST) for m in engines]
    for i, monque in enumerate(engines):
        if kind == "async":

            async def handler(job: Job[Any], i: int = i) -> None:
                runs.append(f"start-{i}")
                await asyncio.sleep(5)

        else:

            def handler(job: Job[Any], i: int = i) -> None:  # type: ignore[misc]
                runs.append(f"start-{i}")
                threading.Event().wait(5)

        monque.worker("long", handler)
    job = await engines[0].now("long")
    await asyncio.gather(*(m.start() for m in engines))
    await eventually(
        lambda: mongo_db.monque_jobs.find_one({"_id": job.id, "status": "completed"}),
        timeout=20,
        interval=0.2,  # a sync probe blocks the loop the heartbeats run on
    )
    assert len(runs) == 1
    assert not any(r.events for r in recorders)


async def test_a_worker_that_loses_a_lease_learns_it(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(heartbeat_interval=0.1, lock_timeout=5)
    events = Recorder().listen(monque, Events.JOB_LOST, Events.JOB_COMPLETE, Events.JOB_FAIL)
    cancelled = asyncio.Event()
    flag_seen = threading.Event()

    @monque.worker("async-job")
    async def async_job(job: Job[Any]) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @monque.worker("sync-job")
    def sync_job(job: Job[Any]) -> None:
        for _ in range(3000):
            if job.should_stop:
                flag_seen.set()
                return
            threading.Event().wait(0.01)

    a = await monque.now("async-job")
    s = await monque.now("sync-job")
    await monque.start()
    await eventually(lambda: len(monque.running_jobs) == 2)
    # Another instance took both over (for example after this one stalled past its lease).
    mongo_db.monque_jobs.update_many({}, {"$set": {"claimedBy": "new-owner"}})
    lost = await events.wait_for(Events.JOB_LOST, 2)
    assert {job.id for (job,) in lost} == {a.id, s.id}
    await asyncio.wait_for(cancelled.wait(), 5)
    await eventually(flag_seen.is_set)
    await eventually(lambda: not monque.running_jobs)
    assert not events.of(Events.JOB_COMPLETE) and not events.of(Events.JOB_FAIL)
    assert (
        mongo_db.monque_jobs.count_documents({"claimedBy": "new-owner", "status": "processing"})
        == 2
    )


async def test_two_live_instances_cannot_share_an_id(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    # A 10 s lease on the instance record: a slow start of the second must not outlive it.
    first = make_monque(instance_id="twin", lock_timeout=10)
    second = make_monque(instance_id="twin", lock_timeout=10)
    await first.start()
    with pytest.raises(InstanceIdConflictError, match="twin"):
        await second.start()
    await first.stop()
    await second.start()
    assert second.is_running
    await second.stop()
    assert mongo_db.monque_jobs_instances.count_documents({"_id": "twin"}) == 0


async def test_a_dead_instance_id_is_taken_over(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    mongo_db.monque_jobs_instances.insert_one({"_id": "reborn", "expiresAt": past})
    monque = make_monque(instance_id="reborn")
    await monque.start()
    doc = mongo_db.monque_jobs_instances.find_one({"_id": "reborn"})
    assert doc is not None and doc["expiresAt"].replace(tzinfo=timezone.utc) > past
    await drain(monque)
