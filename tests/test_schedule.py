"""Cron schedules: idempotent per (name, key), updated on change, DST-correct, never lost."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from monque import Events, Job
from monque.cron import check_cron, next_run
from monque.errors import InvalidCronError, JobStateError
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

BERLIN = "Europe/Berlin"


def test_next_run_follows_local_wall_clock_across_dst() -> None:
    winter = datetime(2026, 3, 27, 12, tzinfo=timezone.utc)
    runs = []
    after = winter
    for _ in range(3):
        after = next_run("0 9 * * *", after, BERLIN)
        runs.append(after)
    assert [r.hour for r in runs] == [8, 7, 7], "09:00 Berlin is 08:00 UTC, then 07:00 in DST"
    assert all(r.tzinfo == timezone.utc for r in runs)
    # The hour skipped in spring still runs once, in the first valid minute after it.
    spring = next_run("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=timezone.utc), BERLIN)
    assert spring == datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)
    # Autumn: the repeated hour does not make a daily job run twice on that day.
    saturday = next_run("0 3 * * *", datetime(2026, 10, 23, 12, tzinfo=timezone.utc), BERLIN)
    sunday = next_run("0 3 * * *", saturday, BERLIN)
    assert saturday == datetime(2026, 10, 24, 1, tzinfo=timezone.utc)
    assert sunday - saturday == timedelta(hours=25), "the 25-hour day, one run"


def test_aliases_are_stored_in_their_five_field_form_and_whitespace_normalized() -> None:
    # cron-parser (the TypeScript side) cannot read @midnight: never store an alias.
    assert check_cron("@DAILY") == "0 0 * * *"
    assert check_cron("@midnight") == "0 0 * * *"
    assert check_cron("@weekly") == "0 0 * * 0"
    assert check_cron(" */5  *  * * * ") == "*/5 * * * *"
    start = datetime(2026, 1, 1, 10, 30, tzinfo=timezone.utc)
    assert next_run(check_cron("@hourly"), start) == datetime(2026, 1, 1, 11, tzinfo=timezone.utc)
    # An alias stored by an earlier version still evaluates, and those only the TypeScript
    # Monque accepts (cron-parser's, seconds first) are read when its schedules come by.
    assert next_run("@midnight", start) == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert next_run("@minutely", start) == datetime(2026, 1, 1, 10, 31, tzinfo=timezone.utc)
    assert next_run("@weekends", start) == datetime(2026, 1, 3, tzinfo=timezone.utc)
    with pytest.raises(InvalidCronError):
        check_cron("@minutely")


def test_six_fields_read_seconds_first_as_cron_parser_does() -> None:
    start = datetime(2026, 1, 1, 10, 30, 1, tzinfo=timezone.utc)
    every_10s = check_cron("*/10 * * * * *")
    assert next_run(every_10s, start) == datetime(2026, 1, 1, 10, 30, 10, tzinfo=timezone.utc)
    at_0930_15 = check_cron("15 30 9 * * *")
    assert next_run(at_0930_15, start) == datetime(2026, 1, 2, 9, 30, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "cron", ["0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2", "0 0 15W * *", "0 0 ? * 1", "H * * * *"]
)
def test_extensions_one_side_cannot_read_are_refused(cron: str) -> None:
    with pytest.raises(InvalidCronError, match="TypeScript"):
        check_cron(cron)


@settings(max_examples=200, deadline=None)
@given(
    after=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2090, 1, 1),
        timezones=st.just(timezone.utc),
    ),
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    tz=st.sampled_from(["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
)
def test_next_run_property(after: datetime, minute: int, hour: int, tz: str) -> None:
    nxt = next_run(f"{minute} {hour} * * *", after, tz)
    assert nxt > after
    local = nxt.astimezone(ZoneInfo(tz))
    # Either the wall-clock time matches, or it did not exist that day (a DST gap).
    assert (local.hour, local.minute) == (hour, minute) or nxt - after <= timedelta(days=1)
    assert nxt - after <= timedelta(days=1, hours=1)


async def test_schedule_creates_one_recurring_job(
    make_monque: MakeMonque, handle: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(handle)
    if handle == "sync":
        job = await asyncio.to_thread(
            monque.schedule_sync, "0 9 * * *", "digest", {"v": 1}, timezone=BERLIN
        )
    else:
        job = await monque.schedule("0 9 * * *", "digest", {"v": 1}, timezone=BERLIN)
    assert job.created and job.is_recurring
    assert job.next_run_at.astimezone(ZoneInfo(BERLIN)).hour == 9
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["repeatInterval"] == "0 9 * * *"
    assert doc["timezone"] == BERLIN
    assert doc["uniqueKey"] == "schedule:digest"


async def test_schedule_again_is_idempotent_and_applies_changes(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    first = await monque.schedule("0 9 * * *", "digest", {"v": 1})
    same = await monque.schedule("0 9 * * *", "digest", {"v": 2})
    assert not same.created and same.id == first.id
    assert same.data == {"v": 2}, "changed data is stored"
    assert same.next_run_at == first.next_run_at, "an unchanged cron keeps its next run"
    moved = await monque.schedule("30 18 * * *", "digest", {"v": 2})
    assert moved.id == first.id and not moved.created
    assert moved.repeat_interval == "30 18 * * *"
    assert (moved.next_run_at.hour, moved.next_run_at.minute) == (18, 30)
    assert mongo_db.monque_jobs.count_documents({"name": "digest"}) == 1
    second = await monque.schedule("@hourly", "digest", unique_key="hourly")
    assert second.created and mongo_db.monque_jobs.count_documents({"name": "digest"}) == 2


async def test_ten_instances_scheduling_at_boot_leave_one_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    engines = [make_monque() for _ in range(10)]
    await engines[0].initialize()
    jobs = await asyncio.gather(*(m.schedule("*/5 * * * *", "sweep") for m in engines))
    assert mongo_db.monque_jobs.count_documents({"name": "sweep"}) == 1
    assert sum(j.created for j in jobs) == 1


async def test_recurring_job_runs_and_moves_to_its_next_slot(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    events = Recorder().listen(monque, Events.JOB_COMPLETE)
    monque.worker("tick", lambda job: None)
    job = await monque.schedule("*/10 * * * *", "tick")
    mongo_db.monque_jobs.update_one(
        {"_id": job.id},
        {"$set": {"nextRunAt": datetime.now(timezone.utc), "failCount": 2}},
    )
    await monque.start()
    ((done, _),) = await events.wait_for(Events.JOB_COMPLETE)
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None
    assert doc["status"] == "pending" and doc["failCount"] == 0
    upcoming = doc["nextRunAt"].replace(tzinfo=timezone.utc)
    assert upcoming > datetime.now(timezone.utc) and upcoming.minute % 10 == 0
    assert done.next_run_at == upcoming


async def test_recurring_job_out_of_retries_waits_for_its_next_slot(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(max_retries=2, backoff_base=0.05)
    events = Recorder().listen(monque, Events.JOB_FAIL)

    @monque.worker("tick")
    async def tick(job: Job[Any]) -> None:
        raise RuntimeError("always")

    job = await monque.schedule("0 0 1 1 *", "tick")
    mongo_db.monque_jobs.update_one(
        {"_id": job.id}, {"$set": {"nextRunAt": datetime.now(timezone.utc)}}
    )
    await monque.start()
    fails = await events.wait_for(Events.JOB_FAIL, 2)
    assert [will_retry for *_, will_retry in fails] == [True, False]

    def settled() -> dict[str, Any] | None:
        return mongo_db.monque_jobs.find_one({"_id": job.id, "failCount": 0, "status": "pending"})

    doc = await eventually(settled)
    assert doc is not None
    assert doc["failReason"] == "RuntimeError: always"
    assert doc["nextRunAt"].replace(tzinfo=timezone.utc) == job.next_run_at, "its next cron slot"


async def test_unschedule_removes_the_schedule_and_refuses_a_running_one(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque()
    await monque.schedule("0 3 * * *", "nightly")
    keyed = await monque.schedule("0 4 * * *", "nightly", unique_key="second")
    other = await monque.enqueue("nightly")  # a one-off job of the name is not a schedule
    assert await monque.unschedule("nightly") == 1
    assert await monque.unschedule("nightly") == 0
    left = {d["_id"] for d in mongo_db.monque_jobs.find({"name": "nightly"})}
    assert left == {keyed.id, other.id}
    mongo_db.monque_jobs.update_one({"_id": keyed.id}, {"$set": {"status": "processing"}})
    with pytest.raises(JobStateError, match="running"):
        await monque.unschedule("nightly", unique_key="second")
    assert mongo_db.monque_jobs.count_documents({"_id": keyed.id}) == 1


async def test_a_failed_job_carries_its_traceback_and_time(make_monque: MakeMonque) -> None:
    monque = make_monque(max_retries=1)
    events = Recorder().listen(monque, Events.JOB_FAIL)

    def broken(job: Job[Any]) -> None:
        raise KeyError("missing")

    monque.worker("broken", broken)
    job = await monque.now("broken")
    await monque.start()
    await events.wait_for(Events.JOB_FAIL)
    await monque.stop()
    stored = await monque.get_job(job.id)
    assert stored is not None and stored.status.value == "failed"
    assert stored.fail_traceback is not None and "KeyError: 'missing'" in stored.fail_traceback
    assert "in broken" in stored.fail_traceback
    assert job.created_at is not None
    assert stored.failed_at is not None and stored.failed_at >= job.created_at


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 22-2 * * *", "wraps around"),
        ("0 0 * * FRI-MON", "wraps around"),
        ("0 0 * * 0,7", "repeats"),
        ("*/15,30 * * * *", "repeats"),
        ("0 0 31 2 *", "never occurs"),
        ("0 0 * * 6/1", "start with a step"),
        ("0 0 */2 * 1", "both day-of-month and day-of-week"),
        ("0 0 */1 * */7", "both day-of-month and day-of-week"),
    ],
)
def test_forms_the_two_parsers_read_differently_are_refused(cron: str, why: str) -> None:
    """Found by a differential fuzz against cron-parser (tests/interop)."""
    with pytest.raises(InvalidCronError, match=why):
        check_cron(cron)


def test_a_one_value_range_is_stored_as_the_value() -> None:
    # croniter reads "15-15" as "*": every hour instead of 15:00.
    assert check_cron("0 15-15 * * *") == "0 15 * * *"
    assert check_cron("0 0 * OCT-10/1 5-5/2") == "0 0 * 10 5"
