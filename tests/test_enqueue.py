"""Enqueue: stored documents, delays, unique keys (including concurrent races)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo.database import Database

from monque import ConnectionError, Job, JobStatus, Monque, MonqueError, UnknownJobError
from monque.testing import fail_command
from tests.conftest import MakeMonque


async def _enqueue(monque: Monque, handle: str, *args: Any, **kwargs: Any) -> Job[Any]:
    """The async face on an async handle, the sync face on a sync one."""
    if handle == "sync":
        job: Job[Any] = await asyncio.to_thread(monque.enqueue_sync, *args, **kwargs)
        return job
    return await monque.enqueue(*args, **kwargs)


async def test_enqueue_stores_a_pending_job_with_the_shared_schema(
    make_monque: MakeMonque, handle: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    job = await _enqueue(monque, handle, "send-email", {"to": "a@example.com"})

    assert job.created is True
    assert job.status is JobStatus.PENDING
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["name"] == "send-email"
    assert doc["data"] == {"to": "a@example.com"}
    assert doc["status"] == "pending"
    assert doc["failCount"] == 0
    assert {"nextRunAt", "createdAt", "updatedAt"} <= doc.keys()
    assert doc["nextRunAt"].replace(tzinfo=timezone.utc) >= before
    assert "uniqueKey" not in doc


async def test_now_and_enqueue_sync_on_a_sync_handle(make_monque: MakeMonque) -> None:
    monque = make_monque("sync")
    job = monque.now_sync("report", [1, 2, 3])
    assert job.data == [1, 2, 3]
    async_job = await monque.now("report", {"n": 1})
    assert async_job.id != job.id
    assert await monque.jobs.call_count({"name": "report"}) == 2


async def test_sync_face_on_an_async_handle_is_a_clear_error(make_monque: MakeMonque) -> None:
    monque = make_monque("async")
    with pytest.raises(MonqueError, match="async database handle"):
        monque.enqueue_sync("report")


async def test_delay_and_run_at_set_next_run(make_monque: MakeMonque, handle: str) -> None:
    monque = make_monque(handle)
    delayed = await _enqueue(monque, handle, "later", delay=timedelta(minutes=5))
    assert (
        timedelta(minutes=4)
        < delayed.next_run_at - datetime.now(timezone.utc)
        <= timedelta(minutes=5)
    )
    when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    at = await _enqueue(monque, handle, "later", run_at=when)
    assert at.next_run_at == when
    assert at.next_run_at.utcoffset() == timedelta(0)


async def test_unique_key_returns_the_existing_job(
    make_monque: MakeMonque, handle: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    first = await _enqueue(monque, handle, "sync-user", {"v": 1}, unique_key="user-1")
    second = await _enqueue(monque, handle, "sync-user", {"v": 2}, unique_key="user-1")
    other = await _enqueue(monque, handle, "sync-user", {"v": 3}, unique_key="user-2")

    assert first.created and not second.created and other.created
    assert second.id == first.id
    assert second.data == {"v": 1}, "the stored job is returned, not the rejected payload"
    assert mongo_db.monque_jobs.count_documents({"uniqueKey": "user-1"}) == 1


async def test_same_key_under_another_name_is_another_job(make_monque: MakeMonque) -> None:
    monque = make_monque()
    a = await monque.enqueue("a", unique_key="k")
    b = await monque.enqueue("b", unique_key="k")
    assert a.created and b.created and a.id != b.id


async def test_unique_key_is_free_again_once_the_job_finished(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    first = await monque.enqueue("sync-user", unique_key="user-1")
    mongo_db.monque_jobs.update_one({"_id": first.id}, {"$set": {"status": "completed"}})
    again = await monque.enqueue("sync-user", unique_key="user-1")
    assert again.created and again.id != first.id


async def test_twenty_concurrent_async_enqueues_leave_one_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    engines = [make_monque() for _ in range(4)]
    await engines[0].initialize()
    jobs = await asyncio.gather(
        *(engines[i % 4].enqueue("race", {"i": i}, unique_key="one") for i in range(20))
    )
    assert mongo_db.monque_jobs.count_documents({"name": "race"}) == 1
    assert sum(job.created for job in jobs) == 1
    assert len({job.id for job in jobs}) == 1


async def test_twenty_concurrent_sync_enqueues_from_threads_leave_one_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque("sync")
    monque.initialize_sync()

    def go(i: int) -> Job[Any]:
        return monque.enqueue_sync("race", {"i": i}, unique_key="one")

    with ThreadPoolExecutor(max_workers=20) as pool:
        jobs = list(pool.map(go, range(20)))
    assert mongo_db.monque_jobs.count_documents({"name": "race"}) == 1
    assert sum(job.created for job in jobs) == 1


async def test_known_jobs_turn_a_typo_into_an_error(make_monque: MakeMonque) -> None:
    monque = make_monque(known_jobs=["send-email"])
    await monque.enqueue("send-email")
    with pytest.raises(UnknownJobError, match="sendemail"):
        await monque.enqueue("sendemail")
    with pytest.raises(UnknownJobError):
        await monque.schedule("@daily", "sendemail")


async def test_a_failed_insert_is_reported_not_swallowed(
    make_monque: MakeMonque, mongo_client: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque("sync")
    monque.initialize_sync()
    with (
        fail_command(mongo_client, ["insert"], times=2, error_code=2, error_labels=[]),
        pytest.raises(ConnectionError),
    ):
        monque.enqueue_sync("report")
    assert mongo_db.monque_jobs.count_documents({}) == 0


async def test_a_retryable_insert_error_is_retried_by_the_driver(
    make_monque: MakeMonque, mongo_client: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque("sync")
    monque.initialize_sync()
    with fail_command(mongo_client, ["insert"], times=1, error_code=91):
        job = monque.enqueue_sync("report")
    assert mongo_db.monque_jobs.count_documents({"_id": job.id}) == 1


async def test_enqueue_many_inserts_once_and_honours_unique_keys(
    make_monque: MakeMonque, handle: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    held = await _enqueue(monque, handle, "bulk", {"i": -1}, unique_key="k1")
    items: list[Any] = [("bulk", {"i": i}) for i in range(5)]
    items.append(("bulk", {"i": 99}, {"unique_key": "k1"}))
    items.append(("bulk", {"i": 100}, {"unique_key": "k2", "delay": 60, "priority": 3}))
    if handle == "sync":
        jobs = await asyncio.to_thread(monque.enqueue_many_sync, items)
    else:
        jobs = await monque.enqueue_many(items)
    assert [j.created for j in jobs] == [True] * 5 + [False, True]
    assert jobs[5].id == held.id and jobs[5].data == {"i": -1}
    assert jobs[6].priority == 3 and jobs[6].next_run_at > datetime.now(timezone.utc)
    assert mongo_db.monque_jobs.count_documents({"name": "bulk"}) == 7


async def test_enqueue_many_validates_everything_before_writing(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    from monque import InvalidJobNameError, InvalidOptionError

    with pytest.raises(InvalidJobNameError):
        await monque.enqueue_many([("ok", 1), (" bad", 2)])
    with pytest.raises(InvalidOptionError):
        await monque.enqueue_many([("ok", 1, {"colour": "red"})])
    with pytest.raises(InvalidOptionError):
        await monque.enqueue_many(["ok"])  # type: ignore[list-item]
    assert mongo_db.monque_jobs.count_documents({}) == 0
    assert await monque.enqueue_many([]) == []
