"""Management API: find, page, cancel, retry, reschedule, delete, bulk selectors, stats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from monque import (
    Events,
    InvalidOptionError,
    Job,
    JobNotFoundError,
    JobSelector,
    JobStateError,
    JobStatus,
    UniqueKeyConflictError,
)
from monque.testing import drain
from tests.conftest import MakeMonque
from tests.helpers import Recorder


def _set(db: Database[dict[str, Any]], job: Job[Any], status: str) -> None:
    db.monque_jobs.update_one({"_id": job.id}, {"$set": {"status": status}})


async def test_get_job_by_object_id_or_string(make_monque: MakeMonque, handle: str) -> None:
    monque = make_monque(handle)
    job = await monque.enqueue("report", {"n": 1})
    assert (await monque.get_job(job.id)) == job
    fetched = await monque.get_job(str(job.id))
    assert fetched is not None and fetched.data == {"n": 1}
    assert await monque.get_job(ObjectId()) is None
    with pytest.raises(InvalidOptionError):
        await monque.get_job("not-an-id")
    if handle == "sync":
        assert monque.get_job_sync(job.id) == job


async def test_keyset_pages_stay_correct_while_jobs_change(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    created = [await monque.enqueue("page", {"i": i}) for i in range(7)]
    first = await monque.get_jobs(name="page", limit=3)
    assert [j.data["i"] for j in first.jobs] == [6, 5, 4] and first.next_cursor
    # Jobs change and arrive underneath the reader: no row is skipped or repeated.
    _set(mongo_db, created[6], "completed")
    await monque.enqueue("page", {"i": 99})
    second = await monque.get_jobs(name="page", limit=3, cursor=first.next_cursor)
    third = await monque.get_jobs(name="page", limit=3, cursor=second.next_cursor)
    assert [j.data["i"] for j in second.jobs + third.jobs] == [3, 2, 1, 0]
    assert third.next_cursor is None
    pending = await monque.get_jobs(name="page", status=JobStatus.PENDING, limit=100)
    assert len(pending.jobs) == 7
    both = await monque.get_jobs(status=["completed", "pending"], limit=100)
    assert len(both.jobs) == 8
    with pytest.raises(InvalidOptionError):
        await monque.get_jobs(status="finished")
    with pytest.raises(InvalidOptionError):
        await monque.get_jobs(limit=0)


async def test_cancel_retry_reschedule_delete_with_events(
    make_monque: MakeMonque, handle: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    events = Recorder().listen(
        monque, Events.JOB_CANCELLED, Events.JOB_RETRIED, Events.JOB_RESCHEDULED, Events.JOB_DELETED
    )
    job = await monque.enqueue("report", delay=3600)
    later = datetime.now(timezone.utc) + timedelta(days=2)
    moved = await monque.reschedule_job(job.id, later)
    assert abs(moved.next_run_at - later) < timedelta(milliseconds=1)
    cancelled = await monque.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(JobStateError) as excinfo:
        await monque.cancel_job(job.id)
    assert excinfo.value.status == "cancelled" and excinfo.value.action == "cancel"
    assert str(job.id) in str(excinfo.value)
    with pytest.raises(JobStateError, match="reschedule"):
        await monque.reschedule_job(job.id, later)
    retried = await monque.retry_job(job.id)
    assert retried.status is JobStatus.PENDING and retried.fail_count == 0
    with pytest.raises(JobStateError, match="retry"):
        await monque.retry_job(job.id)
    _set(mongo_db, job, "processing")
    with pytest.raises(JobStateError, match="delete"):
        await monque.delete_job(job.id)
    _set(mongo_db, job, "failed")
    deleted = await monque.delete_job(job.id)
    assert deleted.id == job.id and mongo_db.monque_jobs.count_documents({}) == 0
    with pytest.raises(JobNotFoundError):
        await monque.delete_job(job.id)
    with pytest.raises(JobNotFoundError):
        await monque.retry_job(job.id)
    with pytest.raises(JobNotFoundError):
        await monque.cancel_job(job.id)
    with pytest.raises(JobNotFoundError):
        await monque.reschedule_job(job.id, later)
    names = [name for name, _ in events.events]
    assert names == ["job:rescheduled", "job:cancelled", "job:retried", "job:deleted"]


async def test_sync_management_face(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque("sync")
    job = monque.enqueue_sync("report")
    assert monque.cancel_job_sync(job.id).status is JobStatus.CANCELLED
    assert monque.retry_job_sync(job.id).status is JobStatus.PENDING
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    assert monque.reschedule_job_sync(job.id, when).next_run_at > datetime.now(timezone.utc)
    assert monque.get_jobs_sync(name="report").jobs[0].id == job.id
    assert monque.get_stats_sync().count("pending") == 1
    assert monque.cancel_jobs_sync(JobSelector(name="report")) == 1
    assert monque.retry_jobs_sync(JobSelector(name="report")) == 1
    _set(mongo_db, job, "completed")
    assert monque.delete_jobs_sync(JobSelector(status="completed")) == 1


async def test_retrying_into_a_held_unique_key_is_a_clear_error(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    old = await monque.enqueue("sync-user", unique_key="u1")
    _set(mongo_db, old, "failed")
    new = await monque.enqueue("sync-user", unique_key="u1")
    assert new.created
    with pytest.raises(UniqueKeyConflictError) as excinfo:
        await monque.retry_job(old.id)
    assert excinfo.value.holder_id == new.id and "u1" in str(excinfo.value)
    assert (mongo_db.monque_jobs.find_one({"_id": old.id}) or {})["status"] == "failed"


async def test_bulk_actions_by_selector(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(
        monque, Events.JOBS_CANCELLED, Events.JOBS_RETRIED, Events.JOBS_DELETED
    )
    a = [await monque.enqueue("a") for _ in range(3)]
    b = [await monque.enqueue("b") for _ in range(2)]
    _set(mongo_db, b[0], "processing")
    assert await monque.cancel_jobs(JobSelector(name="a")) == 3
    assert await monque.cancel_jobs(JobSelector(name="b")) == 1, (
        "running jobs are not bulk-cancelled"
    )
    assert await monque.cancel_jobs(JobSelector(status="completed")) == 0
    mongo_db.monque_jobs.update_one(
        {"_id": a[0].id}, {"$set": {"createdAt": datetime(2020, 1, 1, tzinfo=timezone.utc)}}
    )
    assert await monque.retry_jobs(JobSelector(name="a", older_than=timedelta(days=30))) == 1
    assert await monque.retry_jobs(JobSelector(name="a", newer_than=timedelta(days=1))) == 2
    assert await monque.delete_jobs(JobSelector(status=["pending", "processing"])) == 3
    assert mongo_db.monque_jobs.count_documents({}) == 2
    assert [args[0] for _, args in events.events] == [3, 1, 0, 1, 2, 3]
    with pytest.raises(InvalidOptionError):
        JobSelector(older_than=datetime(2020, 1, 1)).to_filter(datetime.now(timezone.utc))


async def test_stats_count_statuses_and_real_durations(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    monque.worker("work", lambda job: None)
    for _ in range(3):
        await monque.enqueue("work")
    await monque.enqueue("other")
    base = datetime.now(timezone.utc) - timedelta(seconds=10)
    mongo_db.monque_jobs.update_many({"name": "work"}, {"$set": {"createdAt": base}})
    await drain(monque)
    stats = await monque.get_stats()
    assert stats.count("completed") == 3 and stats.count("pending") == 1 and stats.total == 4
    assert stats.avg_wait is not None and stats.avg_wait >= 9, "time in the queue, from createdAt"
    assert stats.avg_run is not None and 0 <= stats.avg_run < 5
    only = await monque.get_stats("other")
    assert only.counts == {"pending": 1} and only.avg_run is None
