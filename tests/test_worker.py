"""Processing: claim, run (async and sync handlers), complete, fail, back off, events."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo.database import Database

from monque import Events, InvalidJobDocumentError, Job, JobStatus, WorkerRegistrationError
from monque.testing import drain
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

ALL = (Events.JOB_START, Events.JOB_COMPLETE, Events.JOB_FAIL, Events.JOB_ERROR, Events.JOB_LOST)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_job_runs_and_completes(
    make_monque: MakeMonque, handle: str, kind: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    seen: list[tuple[Any, int]] = []
    loop_thread = threading.get_ident()

    if kind == "async":

        async def handler(job: Job[Any]) -> None:
            seen.append((job.data, threading.get_ident()))

    else:

        def handler(job: Job[Any]) -> None:  # type: ignore[misc]
            seen.append((job.data, threading.get_ident()))

    monque.worker("work", handler)
    events = Recorder().listen(monque, *ALL)
    job = await monque.enqueue("work", {"n": 1})
    await monque.start()
    ((completed_job, duration),) = await events.wait_for(Events.JOB_COMPLETE)

    assert [data for data, _ in seen] == [{"n": 1}]
    ran_on_loop = seen[0][1] == loop_thread
    assert ran_on_loop is (kind == "async"), "sync handlers run off the event loop"
    assert completed_job.id == job.id and completed_job.status is JobStatus.COMPLETED
    assert duration >= 0
    assert [args[0].id for args in events.of(Events.JOB_START)] == [job.id]
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["status"] == "completed"
    assert {"startedAt", "completedAt"} <= doc.keys()
    assert not {"claimedBy", "lockedAt", "lockExpiresAt"} & doc.keys()


async def test_claim_sets_owner_and_lease(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(instance_id="worker-a", lock_timeout=5, heartbeat_interval=1)
    started = asyncio.Event()
    release = asyncio.Event()

    @monque.worker("hold")
    async def hold(job: Job[Any]) -> None:
        started.set()
        await release.wait()

    job = await monque.now("hold")
    await monque.start()
    await asyncio.wait_for(started.wait(), 10)
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["status"] == "processing"
    assert doc["claimedBy"] == "worker-a"
    lease = doc["lockExpiresAt"] - doc["lockedAt"]
    assert lease == timedelta(seconds=5)
    assert monque.running_jobs[0].id == job.id
    release.set()
    await drain(monque)


async def test_failure_backs_off_exponentially_then_fails_for_good(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(max_retries=3, backoff_base=0.1)
    events = Recorder().listen(monque, *ALL)

    @monque.worker("broken")
    def broken(job: Job[Any]) -> None:
        raise ValueError("boom")

    job = await monque.now("broken")
    await monque.start()
    fails = await events.wait_for(Events.JOB_FAIL, 3)
    assert [will_retry for _, _, will_retry in fails] == [True, True, False]
    assert all(isinstance(err, ValueError) for _, err, _ in fails)
    # Each retry waited 2**failCount * backoff_base after the failure, never less.
    retries = [failed_job.next_run_at for failed_job, _, _ in fails[:2]]
    assert retries[1] - retries[0] >= timedelta(seconds=0.4)
    await eventually(lambda: mongo_db.monque_jobs.find_one({"_id": job.id, "status": "failed"}))
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["failCount"] == 3
    assert doc["failReason"] == "ValueError: boom"
    assert "Traceback" in doc["failTraceback"] and "boom" in doc["failTraceback"]
    assert not events.of(Events.JOB_COMPLETE)


async def test_a_failure_is_never_retried_immediately(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(backoff_base=60)
    events = Recorder().listen(monque, Events.JOB_FAIL)

    @monque.worker("broken")
    async def broken(job: Job[Any]) -> None:
        raise RuntimeError("nope")

    job = await monque.now("broken")
    await monque.start()
    ((failed, _, will_retry),) = await events.wait_for(Events.JOB_FAIL)
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "pending" and doc["failCount"] == 1
    wait = doc["nextRunAt"].replace(tzinfo=timezone.utc) - doc["failedAt"].replace(
        tzinfo=timezone.utc
    )
    assert wait == timedelta(minutes=2), "2**1 * backoff_base"
    assert will_retry and failed.next_run_at == doc["nextRunAt"].replace(tzinfo=timezone.utc)


async def test_worker_concurrency_is_never_exceeded(make_monque: MakeMonque) -> None:
    monque = make_monque(worker_concurrency=5)
    active = 0
    peak = 0
    full = asyncio.Event()

    @monque.worker("limited", concurrency=2)
    async def limited(job: Job[Any]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 2:
            full.set()
        # Hold the slot until the limit was reached once, so a slow claim cannot hide a breach.
        await asyncio.wait_for(full.wait(), 10)
        await asyncio.sleep(0.01)
        active -= 1

    for i in range(8):
        await monque.now("limited", {"i": i})
    await drain(monque)
    assert peak == 2


async def test_instance_concurrency_bounds_all_names(make_monque: MakeMonque) -> None:
    monque = make_monque(instance_concurrency=3, worker_concurrency=5)
    active = 0
    peak = 0
    lock = threading.Lock()
    full = threading.Event()

    def track(job: Job[Any]) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            if active == 3:
                full.set()
        full.wait(10)
        threading.Event().wait(0.01)
        with lock:
            active -= 1

    monque.worker("a", track)
    monque.worker("b", track)
    for i in range(6):
        await monque.now("a" if i % 2 else "b")
    await drain(monque)
    assert peak == 3


async def test_due_jobs_run_by_priority_then_due_time(make_monque: MakeMonque) -> None:
    monque = make_monque(worker_concurrency=1)
    order: list[str] = []

    @monque.worker("ordered")
    async def ordered(job: Job[str]) -> None:
        order.append(job.data)

    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    await monque.enqueue("ordered", "low-old", run_at=past - timedelta(minutes=5), priority=-1)
    await monque.enqueue("ordered", "normal-later", run_at=past)
    await monque.enqueue("ordered", "normal-early", run_at=past - timedelta(minutes=1))
    await monque.enqueue("ordered", "high", run_at=past, priority=10)
    await monque.enqueue("ordered", "future", delay=3600, priority=100)
    await drain(monque)
    assert order == ["high", "normal-early", "normal-later", "low-old"]


async def test_only_registered_names_are_claimed(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    monque.worker("mine", lambda job: None)
    other = await monque.now("theirs")
    await monque.now("mine")
    await drain(monque)
    doc = mongo_db.monque_jobs.find_one({"_id": other.id})
    assert doc is not None and doc["status"] == "pending"


def test_registering_a_name_twice(make_monque: MakeMonque) -> None:
    monque = make_monque()

    @monque.worker("dup")
    def first(job: Job[Any]) -> None: ...

    with pytest.raises(WorkerRegistrationError, match="already registered"):
        monque.worker("dup", first)
    monque.worker("dup", lambda job: None, replace=True)
    with pytest.raises(WorkerRegistrationError):
        monque.worker("other", "not callable")  # type: ignore[call-overload]
    with pytest.raises(WorkerRegistrationError):
        monque.worker("other", first, concurrency=0)
    assert monque.worker_names == ["dup"]


async def test_a_raising_listener_never_stops_the_worker(make_monque: MakeMonque) -> None:
    monque = make_monque()
    done = Recorder().listen(monque, Events.JOB_COMPLETE)

    def bad_sync(*args: Any) -> None:
        raise RuntimeError("listener bug")

    async def bad_async(*args: Any) -> None:
        raise RuntimeError("async listener bug")

    async_calls: list[str] = []

    async def good_async(job: Job[Any]) -> None:
        async_calls.append(job.name)

    monque.on(Events.JOB_START, bad_sync)
    monque.on(Events.JOB_START, bad_async)
    monque.on(Events.JOB_START, good_async)
    monque.worker("work", lambda job: None)
    for _ in range(3):
        await monque.now("work")
    await monque.start()
    await done.wait_for(Events.JOB_COMPLETE, 3)
    await eventually(lambda: len(async_calls) == 3)


async def test_once_and_off(make_monque: MakeMonque) -> None:
    monque = make_monque()
    calls: list[str] = []

    def listener(job: Job[Any]) -> None:
        calls.append("on")

    monque.once(Events.JOB_START, lambda job: calls.append("once"))
    monque.on(Events.JOB_START, listener)
    monque.worker("work", lambda job: None)
    await monque.now("work")
    await drain(monque)
    monque.off(Events.JOB_START, listener)
    await monque.now("work")
    await drain(monque)
    assert calls == ["once", "on"]
    monque.on(Events.JOB_START, listener)
    monque.off(Events.JOB_START)
    assert monque.listener_count(Events.JOB_START) == 0


async def test_a_hand_written_bad_document_is_reported_and_skipped(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    now = datetime.now(timezone.utc)
    bad = mongo_db.monque_jobs.insert_one(
        {"name": "work", "status": "pending", "nextRunAt": now, "failCount": "many"}
    ).inserted_id
    good = await monque.now("work")
    await monque.start()
    await events.wait_for(Events.JOB_COMPLETE)
    ((error, job),) = await events.wait_for(Events.JOB_ERROR)
    assert isinstance(error, InvalidJobDocumentError) and job is None
    assert error.document_id == bad
    doc = mongo_db.monque_jobs.find_one({"_id": bad})
    assert doc is not None and doc["status"] == "failed" and "failCount" in doc["failReason"]
    assert doc["failCount"] == "many", "the document's own fields are left as they were"
    assert (mongo_db.monque_jobs.find_one({"_id": good.id}) or {})["status"] == "completed"


async def test_a_job_taken_over_by_another_owner_is_not_overwritten(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(instance_id="me", heartbeat_interval=5, lock_timeout=30)
    events = Recorder().listen(monque, *ALL)
    started = asyncio.Event()
    release = asyncio.Event()

    @monque.worker("contested")
    async def contested(job: Job[Any]) -> None:
        started.set()
        await release.wait()

    job = await monque.now("contested")
    await monque.start()
    await asyncio.wait_for(started.wait(), 10)
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"claimedBy": "someone-else"}})
    release.set()
    ((lost,),) = await events.wait_for(Events.JOB_LOST)
    assert lost.id == job.id and lost.should_stop
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "processing" and doc["claimedBy"] == "someone-else"
    assert not events.of(Events.JOB_COMPLETE)


async def test_a_delayed_job_stored_here_starts_on_time_between_polls(
    make_monque: MakeMonque,
) -> None:
    monque = make_monque(poll_interval=5)
    started: list[float] = []

    @monque.worker("soon")
    async def soon(job: Job[Any]) -> None:
        started.append(time.time())

    await monque.start()
    job = await monque.enqueue("soon", delay=0.3)
    await eventually(lambda: started, timeout=4, message="started before the next 5 s poll")
    assert started[0] >= job.next_run_at.timestamp() - 0.01
