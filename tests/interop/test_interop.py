"""The real TypeScript Monque (``@monque/core``) and this library on one collection.

Needs ``MONQUE_TS_CORE`` (see ``conftest.py``); skipped without it. Every handler run, on
either side, is recorded in ``interop_runs`` ({jobId, name, side: "ts" | "py", startedAt,
endedAt?, outcome?}) so the tests count runs exactly.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque import Job, JobStatus, Monque
from monque.cron import check_cron, next_run
from monque.errors import InvalidCronError, InvalidJobNameError, InvalidUniqueKeyError
from monque.validation import check_name, check_unique_key
from tests.conftest import MakeMonque
from tests.helpers import eventually
from tests.interop.harness import TsHarness, TsOpError, decode, ts_job

UTC = timezone.utc

# Every BSON type a job payload commonly carries, with edge values.
PAYLOAD: dict[str, Any] = {
    "when": datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
    "epoch": datetime(1970, 1, 1, tzinfo=UTC),
    "before_epoch": datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
    "big": 2**53 + 1,  # not a float64: only int64 keeps it
    "big_negative": -(2**62) - 3,
    "int64_max": 2**63 - 1,
    "small_int64": Int64(7),
    "int32": 42,
    "int32_min": -(2**31),
    "float": 0.1,
    "whole_float": 3.0,
    "flag_true": True,
    "flag_false": False,
    "nothing": None,
    "unicode": "emoji 🚀👩‍💻🇯🇵 CJK 漢字かなカナ 한국어 RTL עברית combining é NUL-free",
    "ключ 🔑": "a unicode key",
    "nested": {"a": [1, [2, [3, {"b": None}]], {"c": True}], "d": {"e": {"f": "deep"}}},
    "empty_list": [],
    "empty_doc": {},
    "oid": ObjectId("65a1b2c3d4e5f60718293a4b"),
}

# Python -> int64 (beyond int32); int32 otherwise. TS sees an int64 within +-2**53 as a plain JS
# number, so ``small_int64`` reaches a TS handler as a number, and comes back as int32.
INT64_FIELDS = ("big", "big_negative", "int64_max")


def naive_utc(value: Any) -> Any:
    """Aware datetimes made naive UTC, recursively (pymongo's default decoding)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, Mapping):
        return {k: naive_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [naive_utc(v) for v in value]
    return value


def runs_of(db: Database[dict[str, Any]], job_id: ObjectId) -> list[dict[str, Any]]:
    return list(db.interop_runs.find({"jobId": job_id}).sort("startedAt", 1))


def stored(db: Database[dict[str, Any]], job_id: ObjectId) -> dict[str, Any]:
    doc = db.monque_jobs.find_one({"_id": job_id})
    assert doc is not None, f"no job {job_id}"
    return doc


def status_is(db: Database[dict[str, Any]], job_id: ObjectId, status: str) -> Callable[[], bool]:
    return lambda: (db.monque_jobs.find_one({"_id": job_id}) or {}).get("status") == status


Handler = Callable[[Job[Any]], Awaitable[None]]


def recording(
    db: AsyncDatabase[dict[str, Any]],
    seen: list[Job[Any]],
    act: Callable[[Job[Any]], Awaitable[None]] | None = None,
) -> Handler:
    """A Python handler that records its runs in ``interop_runs`` (side "py") and ``seen``."""

    async def handler(job: Job[Any]) -> None:
        seen.append(job)
        started = await db.interop_runs.insert_one(
            {
                "jobId": job.id,
                "name": job.name,
                "side": "py",
                "pid": os.getpid(),
                "startedAt": datetime.now(UTC),
                "failCount": job.fail_count,
            }
        )
        outcome = "fail"
        try:
            if act is not None:
                await act(job)
            outcome = "ok"
        finally:
            await db.interop_runs.update_one(
                {"_id": started.inserted_id},
                {"$set": {"endedAt": datetime.now(UTC), "outcome": outcome}},
            )

    return handler


# -- producing on one side, working on the other ----------------------------------------------


async def test_ts_enqueues_and_a_python_worker_completes(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    (job_id,) = await ts.enqueue(ts_job("interop-ts-to-py", PAYLOAD))
    monque = make_monque()
    seen: list[Job[Any]] = []
    monque.worker("interop-ts-to-py", recording(async_mongo_db, seen))
    await monque.start()
    await eventually(status_is(mongo_db, job_id, "completed"), message="TS job completed by py")
    await monque.stop()

    assert [job.id for job in seen] == [job_id]
    # The data TS stored reaches the Python handler unchanged (pymongo: naive UTC datetimes).
    data = seen[0].data
    assert data == naive_utc(PAYLOAD)
    for field in (*INT64_FIELDS, "small_int64"):
        assert isinstance(data[field], Int64), field
    assert isinstance(data["whole_float"], float) and isinstance(data["int32"], int)

    job = await ts.get_job(job_id)
    assert job is not None
    assert job["status"] == "completed"
    assert job["failCount"] == 0
    assert "failReason" not in job and "claimedBy" not in job
    assert job["data"] == PAYLOAD  # and back through TS getJob
    python_view = await monque.get_job(job_id)
    assert python_view is not None and python_view.status is JobStatus.COMPLETED


async def test_python_enqueues_and_a_ts_worker_completes(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    monque = Monque(async_mongo_db)
    job = await monque.enqueue("interop-py-to-ts", PAYLOAD)
    worker = await ts.worker({"interop-py-to-ts": "ok"}, pollInterval=50)
    await eventually(status_is(mongo_db, job.id, "completed"), message="py job completed by TS")
    await worker.stop()

    (run,) = runs_of(mongo_db, job.id)
    assert run["side"] == "ts" and run["outcome"] == "ok"
    # What the TS handler saw as job.data, as canonical extended JSON.
    seen = decode(run["dataEjson"])
    assert seen == PAYLOAD
    for field in INT64_FIELDS:
        assert isinstance(seen[field], Int64), field  # a bson Long in JS, exact
    assert isinstance(seen["oid"], ObjectId)
    assert isinstance(seen["when"], datetime) and seen["when"] == PAYLOAD["when"]

    done = await monque.get_job(job.id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED
    assert done.data == naive_utc(PAYLOAD)  # TS's completion left the data alone
    ts_view = await ts.get_job(job.id)
    assert ts_view is not None and ts_view["status"] == "completed"


async def test_a_ts_failure_is_read_by_python(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    (job_id,) = await ts.enqueue(ts_job("interop-ts-fails", {"n": 1}))
    worker = await ts.worker(
        {"interop-ts-fails": "fail:TS handler refused ✗ 漢字"},
        pollInterval=50,
        maxRetries=2,
        baseRetryInterval=10,
    )
    await eventually(status_is(mongo_db, job_id, "failed"), message="TS job failed for good")
    await worker.stop()

    job = await Monque(async_mongo_db).get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.fail_count == 2
    assert job.fail_reason == "TS handler refused ✗ 漢字"
    assert job.claimed_by is None and job.locked_at is None
    runs = runs_of(mongo_db, job_id)
    assert [(r["side"], r["outcome"]) for r in runs] == [("ts", "fail"), ("ts", "fail")]
    assert [r["failCount"] for r in runs] == [0, 1]


async def test_a_python_failure_is_read_by_ts(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    monque = make_monque()

    async def refuse(job: Job[Any]) -> None:
        raise RuntimeError("python handler refused ✗")

    seen: list[Job[Any]] = []
    monque.worker("interop-py-fails", recording(async_mongo_db, seen, refuse), max_retries=2)
    job = await monque.enqueue("interop-py-fails", {"n": 1})
    await monque.start()
    await eventually(status_is(mongo_db, job.id, "failed"), message="py job failed for good")
    await monque.stop()

    ts_view = await ts.get_job(job.id)
    assert ts_view is not None
    assert ts_view["status"] == "failed"
    assert ts_view["failCount"] == 2
    assert ts_view["failReason"] == "RuntimeError: python handler refused ✗"
    assert not {"claimedBy", "lockedAt", "lastHeartbeat"} & set(ts_view)
    assert len(seen) == 2
    # TS can retry what Python failed; a Python worker then runs it.
    retried = await ts.op("retryJob", id=job.id)
    assert retried["status"] == "pending" and retried["failCount"] == 0
    assert "failReason" not in stored(mongo_db, job.id)
    python_view = await monque.get_job(job.id)
    assert python_view is not None and python_view.status is JobStatus.PENDING


async def test_management_across_languages(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db)
    later = datetime.now(UTC) + timedelta(hours=1)
    py_job = await monque.enqueue("interop-manage", {"by": "py"}, run_at=later)
    (ts_id,) = await ts.enqueue(ts_job("interop-manage", {"by": "ts"}, run_at=later))

    # TS cancels the Python job, Python cancels the TS job: both read as cancelled.
    cancelled = await ts.op("cancelJob", id=py_job.id)
    assert cancelled["status"] == "cancelled"
    py_cancel = await monque.cancel_job(ts_id)
    assert py_cancel.status is JobStatus.CANCELLED
    assert (await ts.get_job(ts_id) or {})["status"] == "cancelled"
    # Cancelling a cancelled job again: TS answers with the job (idempotent).
    again = await ts.op("cancelJob", id=ts_id)
    assert again["status"] == "cancelled"
    # Retry both through the other side's API.
    assert (await monque.retry_job(py_job.id)).status is JobStatus.PENDING
    assert (await ts.op("retryJob", id=ts_id))["status"] == "pending"
    # TS reschedules the Python job; Python reads the new time.
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    moved = await ts.op("rescheduleJob", id=py_job.id, run_at=when)
    assert moved["nextRunAt"] == when
    assert (await monque.get_job(py_job.id) or py_job).next_run_at == when
    # TS refuses what its rules refuse, with its JobStateError.
    mongo_db.monque_jobs.update_one({"_id": ts_id}, {"$set": {"status": "completed"}})
    with pytest.raises(TsOpError) as refused:
        await ts.op("cancelJob", id=ts_id)
    assert refused.value.name == "JobStateError"
    stats = await ts.op("getQueueStats")
    assert stats["pending"] == 1 and stats["completed"] == 1 and stats["total"] == 2


# -- unique keys and schedules -----------------------------------------------------------------


async def test_unique_keys_hold_across_languages(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db)
    name = "interop-unique"
    # Python first, TS second: TS gets the Python job back.
    first = await monque.enqueue(name, {"by": "py"}, unique_key="k1")
    assert first.created
    (from_ts,) = await ts.enqueue(ts_job(name, {"by": "ts"}, unique_key="k1"))
    assert from_ts == first.id
    # TS first, Python second.
    (ts_k2,) = await ts.enqueue(ts_job(name, {"by": "ts"}, unique_key="k2"))
    py_k2 = await monque.enqueue(name, {"by": "py"}, unique_key="k2")
    assert py_k2.id == ts_k2 and not py_k2.created
    assert py_k2.data == {"by": "ts"}
    # A finished job frees its key on both sides.
    await ts.op("cancelJob", id=ts_k2)
    fresh = await monque.enqueue(name, {"by": "py"}, unique_key="k2")
    assert fresh.created and fresh.id != ts_k2
    # Both at once, many times each: one active job per key.
    keys = [f"race-{i}" for i in range(10)]
    ts_jobs = [ts_job(name, {"by": "ts", "k": k}, unique_key=k) for k in keys]
    ts_ids, py_jobs = await asyncio.gather(
        ts.enqueue(*ts_jobs),
        asyncio.gather(*(monque.enqueue(name, {"by": "py"}, unique_key=k) for k in keys)),
    )
    assert [job.id for job in py_jobs] == ts_ids
    for key in ["k1", "k2", *keys]:
        active = mongo_db.monque_jobs.count_documents(
            {"name": name, "uniqueKey": key, "status": {"$in": ["pending", "processing"]}}
        )
        assert active == 1, key


async def test_schedules_across_languages(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db)
    # TS schedule() has no de-duplication of its own: without a uniqueKey every call inserts.
    a = await ts.op("schedule", cron="*/5 * * * *", name="interop-cron-plain", data={"n": 1})
    b = await ts.op("schedule", cron="*/5 * * * *", name="interop-cron-plain", data={"n": 1})
    assert a["_id"] != b["_id"] and "uniqueKey" not in a
    # Python's key-less schedule() adopts one of them (keys it) and cancels the pending twin.
    adopted = await monque.schedule("*/5 * * * *", "interop-cron-plain", {"n": 2})
    assert adopted.id in {a["_id"], b["_id"]} and not adopted.created
    assert adopted.unique_key == "schedule:interop-cron-plain"
    active = list(
        mongo_db.monque_jobs.find(
            {"name": "interop-cron-plain", "status": {"$in": ["pending", "processing"]}}
        )
    )
    assert [doc["_id"] for doc in active] == [adopted.id]
    twin = stored(mongo_db, b["_id"] if adopted.id == a["_id"] else a["_id"])
    assert twin["status"] == "cancelled"
    # Python keys a schedule by "schedule:<name>": TS with that key and Python share one job.
    ts_cron = await ts.op(
        "schedule",
        cron="0 9 * * 1",
        name="interop-cron",
        data={"by": "ts"},
        unique_key="schedule:interop-cron",
    )
    py_cron = await monque.schedule("0 9 * * 1", "interop-cron", {"by": "py"})
    assert py_cron.id == ts_cron["_id"] and not py_cron.created
    assert mongo_db.monque_jobs.count_documents({"name": "interop-cron"}) == 1
    doc = stored(mongo_db, py_cron.id)
    assert doc["repeatInterval"] == "0 9 * * 1"
    assert doc["data"] == {"by": "py"}  # Python refreshed the data of the shared schedule
    # Python's schedule the other way round: TS with the same key finds it.
    py_first = await monque.schedule("*/10 * * * *", "interop-cron-2", {"by": "py"})
    again = await ts.op(
        "schedule",
        cron="*/10 * * * *",
        name="interop-cron-2",
        data={"by": "ts"},
        unique_key="schedule:interop-cron-2",
    )
    assert again["_id"] == py_first.id


async def test_a_python_schedule_runs_on_a_ts_worker(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db)
    job = await monque.schedule("*/5 * * * *", "interop-py-cron", {"n": 1})
    made_due = datetime.now(UTC) - timedelta(seconds=1)
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"nextRunAt": made_due}})
    worker = await ts.worker({"interop-py-cron": "ok"}, pollInterval=50, env={"TZ": "UTC"})
    await eventually(lambda: runs_of(mongo_db, job.id), message="the TS worker ran it")
    after = await eventually(
        lambda: (
            (d := stored(mongo_db, job.id))["status"] == "pending"
            and d["nextRunAt"] > made_due.replace(tzinfo=None)
            and d
        ),
        message="rescheduled by TS",
    )
    await worker.stop()
    upcoming = after["nextRunAt"].replace(tzinfo=UTC)
    assert upcoming.minute % 5 == 0 and upcoming.second == 0
    assert upcoming == next_run("*/5 * * * *", upcoming - timedelta(minutes=5))
    assert after["repeatInterval"] == "*/5 * * * *" and after["failCount"] == 0


CRONS = [
    "*/5 * * * *",
    "0 9 * * 1",
    "0 9 * * MON-FRI",
    "30 2 1 * *",
    "0 0 1 JAN *",
    "15,45 */2 * * *",
    "0 12 29 2 *",
    "0 0 * * 0",
    "0 0 * * 7",
    "*/10 * * * * *",  # six fields: seconds first in both
    "0 30 9 * * 1-5",
    "@daily",
    "@hourly",
    "@weekly",
    "@monthly",
    "@yearly",
]
NOT_ACCEPTED = ["0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2", "0 0 15W * *", "? * * * *", "x * * * *"]


async def test_cron_dialects_agree(ts: TsHarness) -> None:
    """Every expression Python accepts, TS accepts and evaluates to the same next runs (in
    UTC: TS evaluates in the Node process' local zone, Python in the job's timezone or UTC)."""
    references = [
        datetime(2024, 2, 28, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 0, tzinfo=UTC),
        datetime(2025, 6, 15, 8, 59, 30, tzinfo=UTC),
    ]
    ops: list[dict[str, Any]] = []
    for cron in CRONS:
        ops.append({"op": "validateCron", "expression": cron})
        for ref in references:
            ops.append({"op": "nextCronDate", "expression": cron, "currentDate": ref})
    for cron in NOT_ACCEPTED:
        ops.append({"op": "validateCron", "expression": cron})
    results = iter(await ts.ops(*ops, initialize=False, env={"TZ": "UTC"}))
    for cron in CRONS:
        stored_form = check_cron(cron)
        assert next(results)["ok"], cron
        for ref in references:
            ts_next = next(results)
            assert ts_next["ok"], (cron, ts_next)
            expected = next_run(stored_form, ref)
            assert ts_next["value"] == expected, (cron, ref)
    for cron in NOT_ACCEPTED:
        with pytest.raises(InvalidCronError):
            check_cron(cron)
        next(results)  # TS accepts some of these (L, W, #): Python refuses them on purpose


NAMES = [
    "simple",
    "with.dots:and-dashes_and/slashes",
    "$dollar",
    "ünïcödé",
    "漢字",
    "🚀",
    "a b",
    " lead",
    "trail ",
    "tab\there",
    "new\nline",
    "nbsp\u00a0",
    "ideographic\u3000space",
    "zero\u200bwidth",
    "del\x7f",
    "c1\x85",
    "bom\ufeff",
    "",
    " ",
    "x" * 255,
    "x" * 256,
    "🚀" * 127 + "x",
    "🚀" * 128,
]
KEYS = ["k", "a b", " padded ", "", "   ", "tab\tkey", "nul\x00", "x" * 1024, "x" * 1025]
KEYS += ["🔑" * 512, "🔑" * 512 + "x", "漢字キー"]


async def test_name_and_key_rules_agree(ts: TsHarness) -> None:
    results = await ts.ops(
        *({"op": "validateJobName", "name": name} for name in NAMES),
        *({"op": "validateUniqueKey", "key": key} for key in KEYS),
        initialize=False,
    )

    def python_accepts(check: Callable[[str], str], value: str) -> bool:
        try:
            check(value)
        except (InvalidJobNameError, InvalidUniqueKeyError):
            return False
        return True

    verdicts = [r["ok"] for r in results]
    ts_names, ts_keys = verdicts[: len(NAMES)], verdicts[len(NAMES) :]
    disagree = [
        (name, ts_ok)
        for name, ts_ok in zip(NAMES, ts_names, strict=True)
        if python_accepts(check_name, name) != ts_ok
    ]
    disagree += [
        (key, ts_ok)
        for key, ts_ok in zip(KEYS, ts_keys, strict=True)
        if python_accepts(check_unique_key, key) != ts_ok
    ]
    assert disagree == [], "(value, TS accepts) where Python decides otherwise"


# -- both workers on one queue -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_mixed_pool_runs_every_job_exactly_once(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    names = ["interop-mix-a", "interop-mix-b"]
    # Production-like leases: this is about both sides claiming, not recovery. With the
    # suite's 1 s lease an overloaded embedded server once delayed renewals past it and
    # recovery rightly ran a job again (a CI run); recovery has its own tests.
    monque = make_monque(lock_timeout=15, heartbeat_interval=1)
    seen: list[Job[Any]] = []

    async def work(job: Job[Any]) -> None:
        await asyncio.sleep(0.005)

    for name in names:
        monque.worker(name, recording(async_mongo_db, seen, work))
    await monque.start()
    worker = await ts.worker(dict.fromkeys(names, "sleep:5"), pollInterval=50)

    ts_specs = [ts_job(names[i % 2], {"i": i, "by": "ts"}) for i in range(100)]
    py_specs: list[tuple[str, Any]] = [(names[i % 2], {"i": i, "by": "py"}) for i in range(100)]
    ts_ids, py_jobs = await asyncio.gather(
        ts.enqueue(*ts_specs, parallel=True), monque.enqueue_many(py_specs)
    )
    ids = set(ts_ids) | {job.id for job in py_jobs}
    assert len(ids) == 200

    await eventually(
        lambda: mongo_db.monque_jobs.count_documents({"status": "completed"}) == 200,
        timeout=50,  # ~15 s on the embedded server; its throughput is the bound
        interval=0.1,
        message="200 jobs completed",
    )
    await worker.stop()
    await monque.stop()

    runs = list(mongo_db.interop_runs.find())
    per_job = Counter(run["jobId"] for run in runs)
    assert set(per_job) == ids
    assert max(per_job.values()) == 1, "a job ran twice"
    assert all(run.get("outcome") == "ok" for run in runs)
    sides = Counter(run["side"] for run in runs)
    assert sides["ts"] > 0 and sides["py"] > 0, sides
    assert sorted(job.id for job in seen) == sorted(r["jobId"] for r in runs if r["side"] == "py")
    for doc in mongo_db.monque_jobs.find():
        assert doc["status"] == "completed" and doc["failCount"] == 0
        assert not {"lockedAt", "claimedBy", "lastHeartbeat"} & set(doc)


# -- crashes and live runs ---------------------------------------------------------------------


@pytest.mark.slow
async def test_python_recovers_a_job_of_a_killed_ts_worker(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    monque = make_monque()  # lock_timeout 1 s, recovery sweep every 0.2 s
    job = await monque.enqueue("interop-crash-ts", {"n": 1})
    victim = await ts.worker(
        {"interop-crash-ts": "sleep:60000"}, pollInterval=50, heartbeatInterval=300
    )
    await eventually(lambda: runs_of(mongo_db, job.id), message="the TS worker started the job")
    claimed = stored(mongo_db, job.id)
    assert claimed["status"] == "processing" and claimed["claimedBy"] == victim.instance_id
    await victim.kill()

    seen: list[Job[Any]] = []
    monque.worker("interop-crash-ts", recording(async_mongo_db, seen))
    await monque.start()
    await eventually(
        status_is(mongo_db, job.id, "completed"),
        timeout=15,
        message="the killed TS worker's job recovered and completed by Python",
    )
    await monque.stop()
    runs = runs_of(mongo_db, job.id)
    assert [r["side"] for r in runs] == ["ts", "py"], runs
    assert "endedAt" not in runs[0] and runs[1]["outcome"] == "ok"
    assert [j.id for j in seen] == [job.id]


@pytest.mark.slow
async def test_ts_recovers_a_job_of_a_killed_python_worker(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    """A Python worker process dies holding a job. A TS worker started later, with a lock
    timeout shorter than the claim's age, recovers it at start-up (TS recovers only in
    ``initialize()``) and runs it once, while a Python worker sweeps the collection too: it
    must not take the TS worker's run (which still carries the dead claim's lease fields)."""
    # ts_shutdown_timeout widens the silence Python allows a TS heartbeat (every 300 ms here)
    # so a loaded CI host's late beat is not a death.
    monque = make_monque(ts_shutdown_timeout=5)
    job = await monque.enqueue("interop-crash-py", {"n": 1})
    victim = await ts.py_worker(
        {"interop-crash-py": "sleep:60000"},
        instance_id="py-victim",
        poll_interval=0.05,
        lock_timeout=2,
        heartbeat_interval=0.5,
    )
    await eventually(lambda: runs_of(mongo_db, job.id), message="the Python worker started it")
    await victim.kill()
    lock_timeout_ms = 1000

    def claim_is_stale() -> bool:
        locked: datetime = stored(mongo_db, job.id)["lockedAt"].replace(tzinfo=UTC)
        return datetime.now(UTC) - locked > timedelta(milliseconds=lock_timeout_ms + 300)

    await eventually(claim_is_stale, message="the dead claim is older than the TS lockTimeout")
    rescuer = await ts.worker(
        {"interop-crash-py": "sleep:3000"},
        pollInterval=50,
        lockTimeout=lock_timeout_ms,
        heartbeatInterval=300,
        instanceId="ts-rescuer",
    )
    assert rescuer.events("stale:recovered") == [{"event": "stale:recovered", "count": 1}]
    await eventually(
        lambda: len(runs_of(mongo_db, job.id)) == 2, message="the TS worker runs the job"
    )
    # A Python worker sweeping for expired leases while the TS worker runs the job.
    seen: list[Job[Any]] = []
    monque.worker("interop-crash-py", recording(async_mongo_db, seen))
    await monque.start()
    await eventually(
        status_is(mongo_db, job.id, "completed"), timeout=15, message="TS completed the job"
    )
    await rescuer.stop()
    await monque.stop()
    runs = runs_of(mongo_db, job.id)
    assert [r["side"] for r in runs] == ["py", "ts"], runs
    assert "endedAt" not in runs[0] and runs[1]["outcome"] == "ok"
    assert seen == []
    assert rescuer.events("job:complete")[0]["jobId"] == job.id


@pytest.mark.slow
async def test_python_leaves_a_live_ts_run_alone(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    """A TS run longer than Python's lock_timeout, kept alive by TS heartbeats."""
    (job_id,) = await ts.enqueue(ts_job("interop-long-ts", {"n": 1}))
    worker = await ts.worker(
        {"interop-long-ts": "sleep:4000"}, pollInterval=50, heartbeatInterval=250
    )
    await eventually(lambda: runs_of(mongo_db, job_id), message="TS started the job")
    # lock_timeout 1 s, recovery every 0.2 s; a TS beat may come late on a loaded host
    monque = make_monque(ts_shutdown_timeout=5)
    seen: list[Job[Any]] = []
    monque.worker("interop-long-ts", recording(async_mongo_db, seen))
    await monque.start()
    await eventually(status_is(mongo_db, job_id, "completed"), timeout=15, message="completed")
    await monque.stop()
    await worker.stop()
    assert [r["side"] for r in runs_of(mongo_db, job_id)] == ["ts"]
    assert seen == []
    assert worker.events("job:complete"), worker.describe()


@pytest.mark.slow
async def test_a_ts_start_leaves_a_live_python_run_alone(
    ts: TsHarness,
    mongo_db: Database[dict[str, Any]],
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    make_monque: MakeMonque,
) -> None:
    """A TS worker starting with a lock timeout shorter than a running Python job's age must
    not take it: Python's heartbeats keep the claim fresh for TS's rule (``lockedAt`` age)."""
    # Heartbeats every 0.2 s refresh lockedAt; TS's 3 s lockTimeout and our own 5 s lease
    # leave a loaded host's late renewal room (renewals take three round trips).
    monque = make_monque(lock_timeout=5)

    async def long(job: Job[Any]) -> None:
        await asyncio.sleep(8)

    seen: list[Job[Any]] = []
    monque.worker("interop-long-py", recording(async_mongo_db, seen, long))
    job = await monque.enqueue("interop-long-py", {"n": 1})
    await monque.start()
    await eventually(lambda: runs_of(mongo_db, job.id), message="Python started the job")

    def older_than_ts_lock_timeout() -> bool:
        started: datetime = stored(mongo_db, job.id)["startedAt"].replace(tzinfo=UTC)
        return datetime.now(UTC) - started > timedelta(seconds=3.5)

    await eventually(older_than_ts_lock_timeout, message="the run outlives TS's lockTimeout")
    worker = await ts.worker(
        {"interop-long-py": "ok"}, pollInterval=50, lockTimeout=3000, heartbeatInterval=300
    )
    await eventually(status_is(mongo_db, job.id, "completed"), timeout=20, message="completed")
    await worker.stop()
    await monque.stop()
    assert worker.events("stale:recovered") == []
    assert [r["side"] for r in runs_of(mongo_db, job.id)] == ["py"]
    assert len(seen) == 1
