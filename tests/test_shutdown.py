"""Graceful stop: claiming ends at once, running jobs finish or are handed back."""

from __future__ import annotations

import asyncio
import threading
from datetime import timezone
from typing import Any

from pymongo.database import Database

from monque import Events, Job, Monque, ShutdownTimeoutError
from tests.conftest import FAST, MakeMonque
from tests.helpers import Recorder, eventually


async def test_stop_waits_for_a_running_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    started = asyncio.Event()
    finish = asyncio.Event()

    @monque.worker("slow")
    async def slow(job: Job[Any]) -> None:
        started.set()
        await finish.wait()

    job = await monque.now("slow")
    await monque.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(monque.stop(timeout=10))
    await asyncio.sleep(0.1)
    assert not stopping.done(), "stop() waits for the running job"
    late = await monque.now("slow")
    finish.set()
    await asyncio.wait_for(stopping, 10)
    assert not monque.is_running
    assert (mongo_db.monque_jobs.find_one({"_id": job.id}) or {})["status"] == "completed"
    assert (mongo_db.monque_jobs.find_one({"_id": late.id}) or {})["status"] == "pending", (
        "nothing is claimed once stop() began"
    )


async def test_stop_timeout_hands_jobs_back_and_reports_them(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE, Events.JOB_FAIL)
    started = threading.Event()
    cancelled = asyncio.Event()
    sync_saw_stop = threading.Event()
    release_sync = threading.Event()

    @monque.worker("stuck-async")
    async def stuck_async(job: Job[Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @monque.worker("stuck-sync")
    def stuck_sync(job: Job[Any]) -> None:
        started.set()
        release_sync.wait(10)
        if job.should_stop:
            sync_saw_stop.set()

    a = await monque.now("stuck-async")
    s = await monque.now("stuck-sync")
    await monque.start()
    await eventually(lambda: len(monque.running_jobs) == 2 and started.is_set())
    await monque.stop(timeout=0.2)

    assert cancelled.is_set(), "an async handler past the timeout is cancelled"
    ((error, job),) = events.of(Events.JOB_ERROR)
    assert isinstance(error, ShutdownTimeoutError) and job is None
    assert set(error.job_ids) == {a.id, s.id}
    for original in (a, s):
        doc = mongo_db.monque_jobs.find_one({"_id": original.id})
        assert doc is not None
        assert doc["status"] == "pending" and doc["failCount"] == 0
        assert "claimedBy" not in doc and "lockedAt" not in doc
        # Its place in the queue is kept: still due at its original time.
        stored = doc["nextRunAt"].replace(tzinfo=timezone.utc)
        assert abs((stored - original.next_run_at).total_seconds()) < 0.001
    release_sync.set()
    await eventually(sync_saw_stop.is_set)
    assert not events.of(Events.JOB_COMPLETE) and not events.of(Events.JOB_FAIL)
    assert (mongo_db.monque_jobs.find_one({"_id": s.id}) or {})["status"] == "pending", (
        "the late result of the sync handler is discarded"
    )


async def test_stop_before_start_and_twice_is_harmless(make_monque: MakeMonque) -> None:
    monque = make_monque()
    await monque.stop()
    monque.worker("x", lambda job: None)
    await monque.start()
    await monque.start()
    await monque.stop()
    await monque.stop()
    assert not monque.is_running


def test_run_sync_until_request_stop(mongo_db: Database[dict[str, Any]]) -> None:
    monque = Monque(mongo_db, **FAST)
    done = threading.Event()
    monque.worker("ping", lambda job: done.set())
    monque.enqueue_sync("ping")
    thread = threading.Thread(target=monque.run_sync, kwargs={"handle_signals": False})
    thread.start()
    assert done.wait(10)
    monque.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    assert mongo_db.monque_jobs.count_documents({"status": "completed"}) == 1
