"""Documents as TypeScript Monque 1.10.1 stores them, read and worked on by the Python library.

``golden/*.json`` were written by the real TS library (``node/golden.mjs``; regenerate with
``python -m tests.interop.regenerate_golden``, see ``README.md``). They are the contract: the
exact fields TS writes in each state. No Node is needed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque import Job, JobStatus, Monque
from tests.conftest import MakeMonque
from tests.helpers import eventually
from tests.interop.harness import decode

GOLDEN = Path(__file__).resolve().parent / "golden"
TS_INSTANCE = "golden-ts-worker"
FAIL_REASON = "golden failure: boom ✗"

# The fields of every TS job document, then what each state adds (documentToPersistedJob and
# the writes of JobIntake / JobLifecycle / JobStateTransitions in @monque/core 1.10.1).
BASE = frozenset(
    {"_id", "name", "data", "status", "nextRunAt", "failCount", "createdAt", "updatedAt"}
)
EXTRA: dict[str, set[str]] = {
    "pending": set(),
    "pending-delayed": set(),
    "pending-unique": {"uniqueKey"},
    "pending-cron": {"repeatInterval"},
    # claimNext sets heartbeatInterval; no later write of TS ever removes it.
    "pending-retried": {"heartbeatInterval"},
    "pending-recovered": {"heartbeatInterval"},
    "processing": {"claimedBy", "lockedAt", "lastHeartbeat", "heartbeatInterval"},
    "completed": {"heartbeatInterval"},
    "failed": {"heartbeatInterval", "failReason"},
    "cancelled": set(),
}
STATUS = {
    "pending": "pending",
    "pending-delayed": "pending",
    "pending-unique": "pending",
    "pending-cron": "pending",
    "pending-retried": "pending",
    "pending-recovered": "pending",
    "processing": "processing",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
NAMES = {stem: f"golden-{stem.removeprefix('pending-')}" for stem in STATUS}
DATE_FIELDS = ("nextRunAt", "createdAt", "updatedAt", "lockedAt", "lastHeartbeat")


def payload(case: str) -> dict[str, Any]:
    """The data of every golden document (``payload()`` in ``node/golden.mjs``)."""
    return {
        "case": case,
        "text": "golden ✓ 漢字 🚀 émoji",
        "int32": 42,
        "int64": Int64(9007199254740993),
        "double": 2.5,
        "flag": True,
        "nothing": None,
        "when": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
        "nested": {"list": [1, "two", {"three": 3}], "empty": {}},
    }


def load(stem: str) -> dict[str, Any]:
    doc = decode((GOLDEN / f"{stem}.json").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def naive_utc(value: Any) -> Any:
    """``value`` with aware datetimes made naive UTC (how pymongo decodes by default)."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, Mapping):
        return {k: naive_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [naive_utc(v) for v in value]
    return value


def aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def insert(db: Database[dict[str, Any]], *stems: str, **overrides: Any) -> list[ObjectId]:
    """Store golden documents as they are (``overrides`` set fields on all of them)."""
    ids = []
    for stem in stems:
        doc = {**load(stem), **overrides}
        db.monque_jobs.insert_one(doc)
        ids.append(doc["_id"])
    return ids


def stored(db: Database[dict[str, Any]], job_id: ObjectId) -> dict[str, Any]:
    doc = db.monque_jobs.find_one({"_id": job_id})
    assert doc is not None
    return doc


def test_every_state_has_a_golden_document() -> None:
    files = {path.stem for path in GOLDEN.glob("*.json") if not path.stem.startswith("_")}
    assert files == set(STATUS)


@pytest.mark.parametrize("stem", sorted(STATUS))
def test_ts_writes_exactly_these_fields(stem: str) -> None:
    doc = load(stem)
    assert set(doc) == BASE | EXTRA[stem]
    assert isinstance(doc["_id"], ObjectId)
    assert doc["name"] == NAMES[stem]
    assert doc["status"] == STATUS[stem]
    assert doc["data"] == payload(stem)
    # BSON types: JS numbers that are integers are stored as int32, never int64.
    assert type(doc["failCount"]) is int
    assert isinstance(doc["data"]["int64"], Int64)
    for field in DATE_FIELDS:
        if field in doc:
            assert isinstance(doc[field], datetime), field
    assert doc["createdAt"] <= doc["updatedAt"]
    if "heartbeatInterval" in doc:
        assert type(doc["heartbeatInterval"]) is int  # milliseconds


def test_ts_state_details() -> None:
    assert load("pending")["nextRunAt"] == load("pending")["createdAt"]
    delayed = load("pending-delayed")
    assert delayed["nextRunAt"] == datetime(2099, 1, 1, tzinfo=timezone.utc)
    assert load("pending-unique")["uniqueKey"] == "golden-unique-key"
    cron = load("pending-cron")
    assert cron["repeatInterval"] == "*/5 * * * *"
    assert cron["nextRunAt"].minute % 5 == 0 and cron["nextRunAt"].second == 0
    assert cron["nextRunAt"] > cron["createdAt"]

    running = load("processing")
    assert running["claimedBy"] == TS_INSTANCE
    assert running["heartbeatInterval"] == 500
    # A heartbeat moves lastHeartbeat and updatedAt; lockedAt stays the claim time (TS stale
    # recovery compares lockedAt with lockTimeout, so it ignores heartbeats).
    assert running["lockedAt"] < running["lastHeartbeat"] == running["updatedAt"]
    assert running["failCount"] == 0

    failed = load("failed")
    assert failed["failCount"] == 3  # maxRetries 3: the third failure is terminal
    assert failed["failReason"] == FAIL_REASON  # error.message only, no error class

    retried = load("pending-retried")
    assert retried["failCount"] == 0 and retried["nextRunAt"] == retried["updatedAt"]
    recovered = load("pending-recovered")
    # Stale recovery puts the job back as it was due: no attempt counted, no reason.
    assert recovered["failCount"] == 0 and recovered["nextRunAt"] == recovered["createdAt"]
    assert load("completed")["failCount"] == 0


@pytest.mark.parametrize("stem", sorted(STATUS))
async def test_python_reads_a_ts_document(
    stem: str, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    doc = load(stem)
    (job_id,) = insert(mongo_db, stem)
    monque = Monque(async_mongo_db)
    job = await monque.get_job(job_id)
    assert job is not None
    assert job.id == job_id
    assert job.name == NAMES[stem]
    assert job.status is JobStatus(STATUS[stem])
    assert naive_utc(job.data) == naive_utc(payload(stem))
    assert isinstance(job.data["int64"], Int64)
    assert job.next_run_at == doc["nextRunAt"]
    assert job.created_at == doc["createdAt"]
    assert job.updated_at == doc["updatedAt"]
    assert job.fail_count == doc["failCount"]
    assert job.fail_reason == doc.get("failReason")
    assert job.repeat_interval == doc.get("repeatInterval")
    assert job.unique_key == doc.get("uniqueKey")
    assert job.claimed_by == doc.get("claimedBy")
    assert job.locked_at == doc.get("lockedAt")
    assert job.last_heartbeat == doc.get("lastHeartbeat")
    assert job.priority == 0 and job.timezone is None
    # Python-only fields TS never writes.
    assert job.lock_expires_at is None and job.started_at is None and job.completed_at is None
    assert Job.from_document(naive_utc(doc)) == job


async def test_python_lists_every_ts_document(
    mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    ids = insert(mongo_db, *sorted(STATUS))
    monque = Monque(async_mongo_db)
    page = await monque.get_jobs(limit=100)
    assert {job.id for job in page.jobs} == set(ids)
    assert page.next_cursor is None
    for status in JobStatus:
        expected = {NAMES[s] for s, st in STATUS.items() if st == status.value}
        listed = await monque.get_jobs(status=status, limit=100)
        assert {job.name for job in listed.jobs} == expected, status
    stats = await monque.get_stats()
    assert stats.total == len(STATUS)
    assert stats.count("pending") == 6
    for state in ("processing", "completed", "failed", "cancelled"):
        assert stats.count(state) == 1


async def test_python_worker_completes_pending_ts_documents(
    mongo_db: Database[dict[str, Any]], make_monque: MakeMonque
) -> None:
    due = ["pending", "pending-unique", "pending-retried", "pending-recovered"]
    ids = dict(zip(due, insert(mongo_db, *due), strict=True))
    (delayed_id,) = insert(mongo_db, "pending-delayed")
    monque = make_monque()
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job[Any]) -> None:
        seen.append((job.name, job.data))

    for stem in due:
        monque.worker(NAMES[stem], handler)
    monque.worker(NAMES["pending-delayed"], handler)
    await monque.start()
    await eventually(
        lambda: mongo_db.monque_jobs.count_documents({"status": "completed"}) == len(due),
        message="the due TS documents completed",
    )
    await monque.stop()
    assert sorted(name for name, _ in seen) == sorted(NAMES[s] for s in due)
    assert {data["case"] for _, data in seen} == set(due)
    for stem, job_id in ids.items():
        before, after = load(stem), stored(mongo_db, job_id)
        assert after["status"] == "completed"
        for field in ("name", "data", "createdAt", "nextRunAt", "failCount"):
            assert after[field] == naive_utc(before[field]), (stem, field)
        assert not {"lockedAt", "claimedBy", "lastHeartbeat"} & set(after), stem
        assert after.get("uniqueKey") == before.get("uniqueKey")
    delayed = stored(mongo_db, delayed_id)
    assert delayed["status"] == "pending" and delayed["updatedAt"] == naive_utc(
        load("pending-delayed")["updatedAt"]
    )


async def test_python_worker_runs_a_ts_cron_document(
    mongo_db: Database[dict[str, Any]], make_monque: MakeMonque
) -> None:
    made_due = datetime.now(timezone.utc) - timedelta(seconds=1)
    (job_id,) = insert(mongo_db, "pending-cron", nextRunAt=made_due)
    monque = make_monque()
    runs: list[Any] = []

    @monque.worker(NAMES["pending-cron"])
    async def tick(job: Job[Any]) -> None:
        runs.append(job.id)

    await monque.start()
    await eventually(lambda: runs, message="the TS schedule ran")
    after = await eventually(
        lambda: (
            (d := stored(mongo_db, job_id))["status"] == "pending"
            and d["nextRunAt"] > made_due.replace(tzinfo=None)
            and d
        ),
        message="the TS schedule was rescheduled",
    )
    await monque.stop()
    assert runs == [job_id]
    assert after["repeatInterval"] == "*/5 * * * *"
    assert after["failCount"] == 0
    upcoming = aware(after["nextRunAt"])
    assert upcoming is not None
    assert upcoming.minute % 5 == 0 and upcoming.second == 0 and upcoming.microsecond == 0
    assert timedelta(0) < upcoming - datetime.now(timezone.utc) <= timedelta(minutes=5)


@pytest.mark.parametrize("stem", ["failed", "cancelled"])
async def test_python_retries_a_ts_document(
    stem: str, mongo_db: Database[dict[str, Any]], make_monque: MakeMonque
) -> None:
    (job_id,) = insert(mongo_db, stem)
    monque = make_monque()
    retried = await monque.retry_job(job_id)
    assert retried.status is JobStatus.PENDING
    assert retried.fail_count == 0
    # TS retryJob removes failReason; Python's retry_job keeps the last one (not asserted).
    doc = stored(mongo_db, job_id)
    assert doc["status"] == "pending" and doc["failCount"] == 0
    assert doc["data"] == naive_utc(payload(stem))
    runs: list[Any] = []

    @monque.worker(NAMES[stem])
    async def again(job: Job[Any]) -> None:
        runs.append(job.id)

    await monque.start()
    await eventually(
        lambda: stored(mongo_db, job_id)["status"] == "completed", message="retried job ran"
    )
    await monque.stop()
    assert runs == [job_id]


async def test_python_recovers_a_stale_ts_claim(
    mongo_db: Database[dict[str, Any]], make_monque: MakeMonque
) -> None:
    """A TS worker died holding this job (its claim is hours old by now): a Python worker's
    recovery sweep must hand it back and run it once."""
    (job_id,) = insert(mongo_db, "processing")
    monque = make_monque()  # lock_timeout 1 s, recovery sweep every 0.2 s
    runs: list[Any] = []

    @monque.worker(NAMES["processing"])
    async def rerun(job: Job[Any]) -> None:
        runs.append(job.id)

    await monque.start()
    try:
        await eventually(
            lambda: stored(mongo_db, job_id)["status"] == "completed",
            timeout=10,
            message="the stale TS claim was recovered and completed",
        )
    finally:
        await monque.stop()
    await asyncio.sleep(0)  # let a (wrong) second run show up before counting
    assert runs == [job_id]


def _ts_index_models() -> list[IndexModel]:
    specs = decode((GOLDEN / "_indexes.json").read_text(encoding="utf-8"))
    models = []
    for spec in specs:
        if spec["name"] == "_id_":
            continue
        # As TS sends them (``background: true`` included; the server adds ``v``).
        options = {k: v for k, v in spec.items() if k not in {"v", "key"}}
        models.append(IndexModel(list(spec["key"].items()), **options))
    return models


def test_ts_index_list() -> None:
    names = {model.document["name"] for model in _ts_index_models()}
    assert names == {
        "status_1_nextRunAt_1",
        "name_1_uniqueKey_1",
        "name_1_status_1",
        "createdAt_-1__id_-1",
        "updatedAt_-1__id_-1",
        "nextRunAt_-1__id_-1",
        "claimedBy_1_status_1",
        "lastHeartbeat_1_status_1",
        "name_1_status_1_nextRunAt_1_claimedBy_1",
        "status_1_lockedAt_1_lastHeartbeat_1",
    }


@pytest.mark.parametrize("first", ["ts", "python"])
async def test_both_libraries_create_their_indexes_on_one_collection(
    first: str, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    """Both create the unique (name, uniqueKey) index with the same partial filter, under the
    same name (``name_1_uniqueKey_1``) and spec. Either order must leave both libraries able
    to start."""
    ts_models = _ts_index_models()
    monque = Monque(async_mongo_db)
    if first == "ts":
        mongo_db.monque_jobs.create_indexes(ts_models)
        await monque.initialize()
    else:
        await monque.initialize()
        mongo_db.monque_jobs.create_indexes(ts_models)
    names = {index["name"] for index in mongo_db.monque_jobs.list_indexes()}
    assert {model.document["name"] for model in ts_models} <= names
