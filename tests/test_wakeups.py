"""Wake-ups across instances: change stream, next-due timer, resume, fallback to polling.

The worker under test polls only every 30 s, so a job that runs within a few seconds was
started by a wake-up, not by a poll. Skipped where the server has no change streams
(standalone mongod); the fallback tests run everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.database import Database
from pymongo.errors import OperationFailure

from monque import Events, Job, Monque
from monque.lifecycle import new_document
from monque.storage import jobs as jobs_ops
from monque.storage.calls import Operation
from monque.testing import fail_command
from tests.conftest import FAST, MakeMonque
from tests.helpers import Recorder

SLOW_POLLS = {"poll_interval": 30, "stream_poll_interval": 30}
# The worker under test has clients of its own, and failpoints name them: a stream of an
# earlier test still ending its last getMore must not take the fault meant for this one.
APP = "monque-stream-under-test"


@pytest_asyncio.fixture
async def isolated(mongodb_uri: str, mongo_db_name: str) -> AsyncIterator[MakeMonque]:
    """Like ``make_monque``, on clients of its own named ``APP``."""
    options: dict[str, Any] = {"appname": APP, "heartbeatFrequencyMS": 500}
    sync_client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, **options)
    async_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, **options)
    created: list[Monque] = []

    def factory(handle: str = "async", **kwargs: Any) -> Monque:
        client = async_client if handle == "async" else sync_client
        monque = Monque(client[mongo_db_name], **{**FAST, **kwargs})
        created.append(monque)
        return monque

    yield factory
    for monque in created:
        await monque.stop(timeout=2)
    sync_client.close()
    await async_client.close()


@pytest.fixture
def change_streams(mongo_db: Database[dict[str, Any]]) -> None:
    """Skip on a server without change streams (a standalone mongod)."""
    try:
        mongo_db.monque_jobs.watch(max_await_time_ms=1).close()
    except OperationFailure as exc:
        pytest.skip(f"no change streams on this server: {exc}")


async def started_worker(
    make_monque: MakeMonque, handle: str, **options: Any
) -> tuple[Monque, Recorder, dict[str, float]]:
    monque = make_monque(handle=handle, **{**SLOW_POLLS, **options})
    events = Recorder().listen(
        monque,
        Events.CHANGE_STREAM_OPEN,
        Events.POLLING_FALLBACK,
        Events.JOB_COMPLETE,
        Events.JOB_FAIL,
    )
    started: dict[str, float] = {}

    @monque.worker("probe")
    async def probe(job: Job[Any]) -> None:
        started[str(job.id)] = time.time()
        if job.data == "fail-once" and job.fail_count == 0:
            raise RuntimeError("first attempt fails")

    await monque.start()
    await events.wait_for(Events.CHANGE_STREAM_OPEN)
    return monque, events, started


@pytest.mark.usefixtures("change_streams")
@pytest.mark.parametrize("delay", [None, 1.0], ids=["due-now", "delayed"])
async def test_job_from_another_instance_starts_on_time_never_early(
    make_monque: MakeMonque, handle: str, delay: float | None
) -> None:
    _, events, started = await started_worker(make_monque, handle)
    job = await make_monque().enqueue("probe", "x", delay=delay)
    await events.wait_for(Events.JOB_COMPLETE, timeout=8)
    lateness = started[str(job.id)] - job.next_run_at.timestamp()
    assert 0 <= lateness < 5  # the poll would have taken 30 s


@pytest.mark.usefixtures("change_streams")
async def test_job_due_later_stored_before_start_is_timed_from_the_database(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    """No change event for it: the next-due read after the first poll arms the timer."""
    now = datetime.now(timezone.utc)
    due = now + timedelta(seconds=1.5)
    mongo_db.monque_jobs.insert_one(new_document("probe", "stored", now=now, run_at=due))
    _, events, started = await started_worker(make_monque, "async")
    await events.wait_for(Events.JOB_COMPLETE, timeout=8)
    (at,) = started.values()
    assert due.timestamp() <= at < due.timestamp() + 5


@pytest.mark.usefixtures("change_streams")
async def test_retry_after_backoff_is_woken_by_its_own_change(
    make_monque: MakeMonque, handle: str
) -> None:
    _, events, started = await started_worker(make_monque, handle, backoff_base=0.2)
    producer = make_monque()
    await producer.enqueue("probe", "fail-once")
    ((failed, _, will_retry),) = await events.wait_for(Events.JOB_FAIL, timeout=5)
    assert will_retry
    await events.wait_for(Events.JOB_COMPLETE, timeout=8)
    assert started[str(failed.id)] >= failed.next_run_at.timestamp()


@pytest.mark.usefixtures("change_streams")
async def test_a_claim_that_misses_a_due_job_is_retried_at_once_not_at_the_poll(
    make_monque: MakeMonque, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim read can miss a job that is due (its change came while the read ran, or the
    server-clock estimate stepped back between arming the timer and firing it); the next-due
    read after it then finds the job due already. Found in CI: the worker waited for its
    30 s poll because only a future due time armed the timer."""
    _, events, started = await started_worker(make_monque, "async")
    real = jobs_ops.claim_batch
    missed: list[bool] = []

    def miss_once(*args: Any, **kwargs: Any) -> Any:
        if missed:
            return real(*args, **kwargs)
        missed.append(True)
        return nothing_claimed()

    monkeypatch.setattr(jobs_ops, "claim_batch", miss_once)
    job = await make_monque().enqueue("probe", "x", delay=0.3)
    await events.wait_for(Events.JOB_COMPLETE, timeout=5)
    assert missed and str(job.id) in started


def nothing_claimed() -> Operation[tuple[list[dict[str, Any]], bool]]:
    # A generator, like every storage operation, that asks the server nothing.
    yield from ()
    return [], True


@pytest.mark.usefixtures("change_streams")
async def test_dropped_stream_reopens_and_misses_nothing(
    make_monque: MakeMonque,
    isolated: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
    handle: str,
) -> None:
    monque, events, started = await started_worker(isolated, handle)
    stored: list[Any] = []

    def store_while_down(error: BaseException) -> None:
        now = datetime.now(timezone.utc)
        doc = new_document("probe", "while down", now=now, run_at=now)
        mongo_db.monque_jobs.insert_one(doc)
        stored.append(doc["_id"])

    monque.once(Events.POLLING_FALLBACK, store_while_down)
    # Not resumable (no labels): the driver gives up and the watcher reopens with its token.
    with fail_command(
        mongo_client, ["getMore"], times=1, error_code=2, error_labels=[], app_name=APP
    ):
        producer = make_monque()
        await producer.enqueue("probe", "wakes the stream into the failpoint")
        await events.wait_for(Events.POLLING_FALLBACK, timeout=10)
    await events.wait_for(Events.CHANGE_STREAM_OPEN, 2, timeout=10)
    await events.wait_for(Events.JOB_COMPLETE, 2, timeout=10)
    assert str(stored[0]) in started
    assert all(doc["status"] == "completed" for doc in mongo_db.monque_jobs.find({}, {"status": 1}))


@pytest.mark.parametrize(
    ("code", "reopens"), [(40573, False), (286, True)], ids=["standalone", "history-lost"]
)
async def test_stream_open_errors(
    make_monque: MakeMonque,
    isolated: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    request: pytest.FixtureRequest,
    code: int,
    reopens: bool,
) -> None:
    """40573 (a standalone mongod refuses $changeStream): polling, announced once.
    286 (ChangeStreamHistoryLost): reported, then a fresh stream without the token."""
    if reopens:
        request.getfixturevalue("change_streams")
    monque = isolated(**(SLOW_POLLS if reopens else {"poll_interval": 0.05}))
    events = Recorder().listen(
        monque, Events.POLLING_FALLBACK, Events.CHANGE_STREAM_OPEN, Events.JOB_COMPLETE
    )
    monque.worker("probe", lambda job: None)
    with fail_command(
        mongo_client, ["aggregate"], times=1, error_code=code, error_labels=[], app_name=APP
    ):
        await monque.start()
        ((error,),) = await events.wait_for(Events.POLLING_FALLBACK)
    assert getattr(error, "code", None) == code
    if reopens:
        await events.wait_for(Events.CHANGE_STREAM_OPEN, timeout=10)
    await make_monque().enqueue("probe")
    await events.wait_for(Events.JOB_COMPLETE, timeout=5)
    assert bool(events.of(Events.CHANGE_STREAM_OPEN)) == reopens


async def test_change_streams_off_means_no_stream(make_monque: MakeMonque) -> None:
    monque = make_monque(change_streams=False)
    events = Recorder().listen(monque, Events.CHANGE_STREAM_OPEN, Events.JOB_COMPLETE)
    monque.worker("probe", lambda job: None)
    await monque.start()
    await make_monque().enqueue("probe")
    await events.wait_for(Events.JOB_COMPLETE, timeout=5)
    assert not events.of(Events.CHANGE_STREAM_OPEN)


@pytest.mark.usefixtures("change_streams")
async def test_stream_survives_the_collection_being_dropped(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], handle: str
) -> None:
    """A drop invalidates the stream; the watcher opens a new one (no token to resume)."""
    _, events, started = await started_worker(make_monque, handle)
    producer = make_monque()
    await producer.enqueue("unrelated-name")  # not this worker's: no wake-up needed
    mongo_db.monque_jobs.drop()
    await events.wait_for(Events.CHANGE_STREAM_OPEN, 2, timeout=10)
    job = await producer.enqueue("probe", "after the drop")
    await events.wait_for(Events.JOB_COMPLETE, timeout=5)
    assert str(job.id) in started


class Aggregates(monitoring.CommandListener):
    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate":
            stage = event.command["pipeline"][0]
            if "$changeStream" in stage:
                self.streams.append(dict(stage["$changeStream"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.usefixtures("change_streams")
async def test_a_failed_stream_resumes_after_its_token(
    mongodb_uri: str,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
) -> None:
    listener = Aggregates()
    client: MongoClient[dict[str, Any]] = MongoClient(
        mongodb_uri, event_listeners=[listener], appname=APP
    )
    try:
        monque = Monque(client[mongo_db.name], poll_interval=30, stream_poll_interval=30)
        events = Recorder().listen(monque, Events.CHANGE_STREAM_OPEN, Events.POLLING_FALLBACK)
        monque.worker("probe", lambda job: None)
        await monque.start()
        await events.wait_for(Events.CHANGE_STREAM_OPEN)
        with fail_command(
            mongo_client, ["getMore"], times=1, error_code=2, error_labels=[], app_name=APP
        ):
            await Monque(mongo_db).enqueue("probe")  # wakes the stream into the failpoint
            await events.wait_for(Events.POLLING_FALLBACK, timeout=10)
        await events.wait_for(Events.CHANGE_STREAM_OPEN, 2, timeout=10)
        await monque.stop()
    finally:
        client.close()
    first, reopened = listener.streams[0], listener.streams[-1]
    assert "resumeAfter" not in first
    assert "resumeAfter" in reopened


@pytest.mark.usefixtures("change_streams")
async def test_a_stream_outage_is_logged_once_in_one_line_and_its_end_too(
    isolated: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by review: every reopening attempt logged the driver's topology dump at INFO."""
    caplog.set_level(logging.DEBUG, logger="monque.worker")
    monque = isolated(**SLOW_POLLS)
    events = Recorder().listen(monque, Events.POLLING_FALLBACK, Events.CHANGE_STREAM_OPEN)
    monque.worker("probe", lambda job: None)
    with fail_command(
        mongo_client, ["aggregate"], times=3, error_code=286, error_labels=[], app_name=APP
    ):
        await monque.start()
        await events.wait_for(Events.POLLING_FALLBACK, 3, timeout=15)
    await events.wait_for(Events.CHANGE_STREAM_OPEN, timeout=15)
    down = [r for r in caplog.records if "change stream unavailable" in r.getMessage()]
    assert [r.levelname for r in down] == ["INFO", "DEBUG", "DEBUG"]
    assert all("\n" not in r.getMessage() for r in down)
    again = [r for r in caplog.records if "change stream open again" in r.getMessage()]
    assert len(again) == 1 and again[0].levelname == "INFO"
