"""Job controls: timeouts, cooperative cancellation, progress, per-worker retries, retention."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta, timezone
from typing import Any

import pytest
from pymongo.database import Database

from monque import Events, InvalidOptionError, Job, JobTimeoutError, MonqueError, PermanentError
from monque.testing import drain
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually


async def test_async_handler_past_its_timeout_is_cancelled_and_fails(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_FAIL)
    cancelled = asyncio.Event()

    @monque.worker("slow", timeout=0.2, max_retries=1)
    async def slow(job: Job[Any]) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = await monque.now("slow")
    await monque.start()
    ((_, error, will_retry),) = await events.wait_for(Events.JOB_FAIL)
    assert isinstance(error, JobTimeoutError) and not will_retry
    assert cancelled.is_set()
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "failed" and "timeout" in doc["failReason"]


async def test_sync_handler_past_its_timeout_is_flagged_and_its_result_discarded(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_FAIL, Events.JOB_COMPLETE)
    saw_flag = threading.Event()

    @monque.worker("slow-sync", timeout=timedelta(milliseconds=200), backoff_base=3600)
    def slow(job: Job[Any]) -> None:
        for _ in range(500):
            if job.should_stop:
                saw_flag.set()
                return
            threading.Event().wait(0.01)

    job = await monque.now("slow-sync")
    await monque.start()
    ((_, error, will_retry),) = await events.wait_for(Events.JOB_FAIL)
    assert isinstance(error, JobTimeoutError) and will_retry
    await eventually(saw_flag.is_set)
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "pending" and doc["failCount"] == 1
    assert not events.of(Events.JOB_COMPLETE)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancelling_a_running_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], kind: str
) -> None:
    monque = make_monque(heartbeat_interval=0.05, lock_timeout=5)
    events = Recorder().listen(monque, Events.JOB_CANCELLED, Events.JOB_FAIL, Events.JOB_COMPLETE)
    started = threading.Event()

    if kind == "async":

        async def handler(job: Job[Any]) -> None:
            started.set()
            await asyncio.sleep(30)

    else:

        def handler(job: Job[Any]) -> None:  # type: ignore[misc]
            started.set()
            while not job.should_stop:
                threading.Event().wait(0.01)

    monque.worker("long", handler)
    job = await monque.now("long")
    await monque.start()
    await eventually(started.is_set)
    requested = await monque.cancel_job(job.id)
    assert requested.status.value == "processing", "a running job is asked to stop"
    ((cancelled,),) = await events.wait_for(Events.JOB_CANCELLED)
    assert cancelled.id == job.id
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "cancelled" and "cancelRequested" not in doc
    assert not events.of(Events.JOB_FAIL) and not events.of(Events.JOB_COMPLETE)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_progress_is_stored_and_emitted(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], kind: str
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_PROGRESS)

    if kind == "async":

        async def handler(job: Job[Any]) -> None:
            await job.report_progress(50, "halfway")
            await job.report_progress(100)

    else:

        def handler(job: Job[Any]) -> None:  # type: ignore[misc]
            job.report_progress_sync(50, "halfway")
            job.report_progress_sync(100)

    monque.worker("steps", handler)
    job = await monque.now("steps")
    await drain(monque)
    assert [(v, m) for _, v, m in events.of(Events.JOB_PROGRESS)] == [(50, "halfway"), (100, None)]
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["progress"]["value"] == 100
    stored = await monque.get_job(job.id)
    assert stored is not None and stored.progress is not None and stored.progress["value"] == 100


async def test_progress_outside_a_handler_or_out_of_range(make_monque: MakeMonque) -> None:
    monque = make_monque()
    job = await monque.now("x")
    with pytest.raises(MonqueError, match="running"):
        await job.report_progress(10)
    errors: list[BaseException] = []

    @monque.worker("bad-progress")
    async def bad(job: Job[Any]) -> None:
        for value, message in ((101, None), (True, None), (5, 7)):
            try:
                await job.report_progress(value, message)  # type: ignore[arg-type]
            except InvalidOptionError as exc:
                errors.append(exc)

    await monque.now("bad-progress")
    await drain(monque)
    assert len(errors) == 3


async def test_per_worker_retry_policy_and_non_retryable_errors(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(max_retries=10, backoff_base=3600)
    events = Recorder().listen(monque, Events.JOB_FAIL)

    @monque.worker("quick-retries", max_retries=2, backoff_base=0.05)
    async def flaky(job: Job[Any]) -> None:
        raise RuntimeError("again")

    @monque.worker("permanent")
    async def permanent(job: Job[Any]) -> None:
        raise PermanentError("bad input, retrying won't help")

    @monque.worker("typed", non_retryable=[KeyError])
    def typed(job: Job[Any]) -> None:
        raise KeyError("missing")

    quick = await monque.now("quick-retries")
    perm = await monque.now("permanent")
    typed_job = await monque.now("typed")
    await monque.start()
    await events.wait_for(Events.JOB_FAIL, 4)
    await eventually(
        lambda: mongo_db.monque_jobs.count_documents({"status": "failed"}) == 3, timeout=10
    )
    by_id = {d["_id"]: d for d in mongo_db.monque_jobs.find()}
    assert by_id[quick.id]["failCount"] == 2
    assert by_id[perm.id]["failCount"] == 1 and by_id[typed_job.id]["failCount"] == 1
    with pytest.raises(InvalidOptionError):
        monque.worker("bad", lambda job: None, max_retries=0)


async def test_retention_sets_expiry_for_finished_jobs(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(
        retention={"completed": timedelta(hours=1), "cancelled": 60}, max_retries=1
    )
    monque.worker("ok", lambda job: None)

    @monque.worker("bad")
    def bad(job: Job[Any]) -> None:
        raise RuntimeError("x")

    done = await monque.now("ok")
    failed = await monque.now("bad")
    cancelled = await monque.enqueue("later", delay=600)
    await monque.cancel_job(cancelled.id)
    await drain(monque)
    docs = {d["_id"]: d for d in mongo_db.monque_jobs.find()}
    ttl = docs[done.id]["expireAt"] - docs[done.id]["completedAt"]
    assert ttl == timedelta(hours=1)
    assert "expireAt" not in docs[failed.id], "failed jobs are kept: no retention for them"
    assert docs[cancelled.id]["expireAt"].replace(tzinfo=timezone.utc) > docs[cancelled.id][
        "cancelledAt"
    ].replace(tzinfo=timezone.utc)
    index = mongo_db.monque_jobs.index_information()["monque_retention"]
    assert index["expireAfterSeconds"] == 0
    retried = await monque.retry_job(cancelled.id)
    assert "expireAt" not in (mongo_db.monque_jobs.find_one({"_id": retried.id}) or {})
    with pytest.raises(InvalidOptionError):
        make_monque(retention={"pending": 60})
    with pytest.raises(InvalidOptionError):
        make_monque(retention=[("completed", 60)])
