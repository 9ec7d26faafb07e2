"""Graceful stop: claiming ends at once, running jobs finish or are handed back."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from monque import Events, Job, Monque, ShutdownTimeoutError
from monque.testing import fail_command
from monque.worker.runtime import STOP_GRACE
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
    monque = make_monque(lock_timeout=5)  # no lease lapses before the stop this test makes
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


# -- stop() is bounded (issue 15) ---------------------------------------------------------------
# stop(timeout) must return within timeout + STOP_GRACE whatever the database does; the margin
# below covers scheduling on a loaded 2-core CI machine.
_MARGIN = 1.5


async def _timed_stop(monque: Monque, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(monque.stop(timeout=timeout), timeout + STOP_GRACE + 30)
    return loop.time() - began


async def test_stop_returns_when_closing_the_change_stream_fails(
    mongodb_uri: str,
    mongo_db: Database[dict[str, Any]],
    mongo_client: MongoClient[dict[str, Any]],
) -> None:
    """The hang of issue 15: the stream follower, cancelled in its getMore, closes the stream;
    the failing killCursors leaves the driver selecting a server again (for up to 30 s with the
    default heartbeat) or replaces the CancelledError by a PyMongoError that looked like a stream
    failure to reopen from. stop() waited for it without a bound."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)  # default heartbeat
    monque = Monque(client[mongo_db.name], **{**FAST, "stream_poll_interval": 5})
    events = Recorder().listen(monque, Events.CHANGE_STREAM_OPEN, Events.POLLING_FALLBACK)
    try:
        await monque.start()
        await events.wait_for(Events.CHANGE_STREAM_OPEN)
        await asyncio.sleep(0.3)  # an idle worker waits in the stream's getMore
        with fail_command(mongo_client, ["killCursors"], times=None, error_code=91):
            took = await _timed_stop(monque, 1)
        assert took < 1 + STOP_GRACE + _MARGIN
        assert not monque.is_running
        assert len(events.of(Events.CHANGE_STREAM_OPEN)) == 1, "the stream was not reopened"
    finally:
        await client.close()


async def test_stop_is_bounded_when_the_registry_write_hangs(
    make_monque: MakeMonque, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    monque = make_monque(handle="sync")
    errors = Recorder().listen(monque, Events.JOB_ERROR)
    await monque.start()
    with fail_command(mongo_client, ["delete"], times=None, block_ms=8000):
        took = await _timed_stop(monque, 0.5)
    assert took < 0.5 + STOP_GRACE + _MARGIN
    assert any("unregistering" in str(error) for error, _ in errors.of(Events.JOB_ERROR))


async def test_stop_is_bounded_when_a_listener_never_returns(make_monque: MakeMonque) -> None:
    monque = make_monque()
    monque.worker("x", lambda job: None)

    async def stuck(job: Job[Any], duration: float) -> None:
        await asyncio.Event().wait()

    monque.on(Events.JOB_COMPLETE, stuck)
    await monque.now("x")
    await monque.start()
    await eventually(lambda: monque._tasks)  # the stuck listener is running
    took = await _timed_stop(monque, 0.5)
    assert took < 0.5 + STOP_GRACE + _MARGIN


async def test_start_and_stop_in_a_loop_never_hang(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """The scenario issue 15 was seen in (a dead instance's id taken over, then stopped at once),
    repeated with stops landing at every stage of start-up: each returns in its bound."""
    rng = random.Random(15)
    for round_ in range(20):
        past = datetime.now(timezone.utc) - timedelta(minutes=1)
        mongo_db.monque_jobs_instances.replace_one(
            {"_id": "reborn"}, {"_id": "reborn", "expiresAt": past}, upsert=True
        )
        monque = make_monque(instance_id="reborn")
        monque.worker("x", lambda job: None)
        await monque.now("x")
        await monque.start()
        await asyncio.sleep(rng.random() * 0.3)
        took = await _timed_stop(monque, 0.5)
        assert took < 0.5 + STOP_GRACE + _MARGIN, f"round {round_}: stop took {took:.1f}s"
