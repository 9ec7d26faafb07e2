"""Driver errors at each step: reported as job:error, retried, never fatal to the worker."""

from __future__ import annotations

import threading
from typing import Any
from unittest import mock

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from monque import ConnectionError, Events, Job
from monque.storage.calls import JobCollection
from monque.testing import drain, fail_command
from tests.conftest import MakeMonque
from tests.helpers import Recorder


@pytest.mark.parametrize(
    ("concurrency", "command"),
    [(1, "findAndModify"), (5, "find")],
    ids=["single-claim", "batch-claim"],
)
async def test_claim_errors_are_reported_and_polling_resumes(
    make_monque: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    concurrency: int,
    command: str,
) -> None:
    monque = make_monque(worker_concurrency=concurrency)
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    for _ in range(3):  # more than one due: after a first single claim, a batch
        await monque.now("work")
    with fail_command(mongo_client, [command], times=3, error_code=2, error_labels=[]):
        await monque.start()
        await events.wait_for(Events.JOB_ERROR, 3)
    await events.wait_for(Events.JOB_COMPLETE, 3)
    assert all(isinstance(err, ConnectionError) for err, _ in events.of(Events.JOB_ERROR))


async def test_completion_write_is_retried_not_dropped(
    make_monque: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
) -> None:
    # Claims are findAndModify; no heartbeat or recovery sweep sends an `update` meanwhile
    # (either one, due 0.2 s after a slow start, could take a failure meant for the write).
    monque = make_monque(
        handle="sync",
        worker_concurrency=1,
        heartbeat_interval=5,
        lock_timeout=30,
        recovery_interval=60,
    )
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    job = await monque.now("work")
    await monque.jobs.call_count({})  # connection warm before the failpoint
    with fail_command(mongo_client, ["update"], times=3, error_code=2, error_labels=[]):
        await monque.start()
        await events.wait_for(Events.JOB_ERROR, 3)
    ((done, _),) = await events.wait_for(Events.JOB_COMPLETE)
    assert done.id == job.id
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and doc["status"] == "completed"
    (err, errjob) = events.of(Events.JOB_ERROR)[0]
    assert errjob is not None and errjob.id == job.id and "recording the result" in str(err)


async def test_failed_batch_claim_leaves_nothing_held(
    make_monque: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
) -> None:
    """The claiming update_many fails: the error is reported, no job stays processing
    unheld, and every job still runs exactly once."""
    # Slow heartbeats, no recovery sweep (its update_many would be due 0.2 s after a slow
    # start), and handlers held until the error is reported: the claim's update_many is the
    # only `update` command while the failpoint is armed.
    monque = make_monque(
        worker_concurrency=5, lock_timeout=10, heartbeat_interval=5, recovery_interval=60
    )
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE)
    reported = threading.Event()
    monque.on(Events.JOB_ERROR, lambda error, job: reported.set())
    runs: list[Any] = []

    @monque.worker("work")
    def work(job: Job[Any]) -> None:
        runs.append(job.id)
        reported.wait(10)

    for _ in range(4):
        await monque.now("work")
    await monque.jobs.call_count({})  # connection warm before the failpoint
    with fail_command(mongo_client, ["update"], times=1, error_code=2, error_labels=[]):
        await monque.start()
        await events.wait_for(Events.JOB_ERROR)
    await events.wait_for(Events.JOB_COMPLETE, 4)
    assert sorted(runs) == sorted(doc["_id"] for doc in mongo_db.monque_jobs.find())
    assert mongo_db.monque_jobs.count_documents({"status": "completed", "failCount": 0}) == 4
    assert "claiming jobs failed" in str(events.of(Events.JOB_ERROR)[0][0])


async def test_closed_connections_during_claims(
    make_monque: MakeMonque, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    monque = make_monque(worker_concurrency=1)
    events = Recorder().listen(monque, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    for _ in range(3):
        await monque.now("work")
    with fail_command(mongo_client, ["findAndModify"], times=2, close_connection=True):
        await monque.start()
        await events.wait_for(Events.JOB_COMPLETE, 3)


async def test_failure_write_errors_mocked(make_monque: MakeMonque) -> None:
    """unittest.mock where a failpoint cannot reach: fail only the failure transition."""
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_FAIL)

    @monque.worker("broken")
    async def broken(job: Job[Any]) -> None:
        raise RuntimeError("handler")

    await monque.now("broken")
    real_call = JobCollection.call
    failures = iter([True, True])

    async def flaky_call(self: JobCollection, call: Any) -> Any:
        if call.method == "update_one" and "failReason" in str(call.args) and next(failures, False):
            raise AutoReconnect("connection reset")
        return await real_call(self, call)

    with mock.patch.object(JobCollection, "call", flaky_call):
        await monque.start()
        ((_job, err, will_retry),) = await events.wait_for(Events.JOB_FAIL)
    assert will_retry and str(err) == "handler"
    assert len(events.of(Events.JOB_ERROR)) == 2
    await monque.stop()


async def test_heartbeat_and_recovery_errors_do_not_stop_the_worker(
    make_monque: MakeMonque, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    # One slot (claims are findAndModify) and no change stream (no next-due reads), so the
    # failing finds are the heartbeat's and the recovery sweep's.
    monque = make_monque(
        heartbeat_interval=0.05, recovery_interval=0.05, worker_concurrency=1, change_streams=False
    )
    events = Recorder().listen(monque, Events.JOB_ERROR)
    monque.worker("work", lambda job: None)
    with fail_command(mongo_client, ["find"], times=2, error_code=2, error_labels=[]):
        await monque.start()
        await events.wait_for(Events.JOB_ERROR, 2)
    await monque.now("work")
    await drain(monque)
    assert any("recover" in str(err) for err, _ in events.of(Events.JOB_ERROR))
