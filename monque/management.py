"""Management operations: find, page, cancel, retry, reschedule, delete, count.

Each is an ``Operation`` (see ``storage.calls``) so the engine exposes it with an async and a
sync face from one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from monque.errors import (
    InvalidOptionError,
    JobNotFoundError,
    JobStateError,
    UniqueKeyConflictError,
)
from monque.job import Job, JobStatus, utc
from monque.lifecycle import Retention, expiry
from monque.storage.calls import Call, Operation
from monque.storage.indexes import ACTIVE
from monque.storage.jobs import LEASE_FIELDS

__all__ = [
    "BULK_STATUSES",
    "JobPage",
    "JobSelector",
    "QueueStats",
    "bulk_filter",
    "cancel_job",
    "cancel_jobs",
    "cancel_matching",
    "delete_job",
    "delete_jobs",
    "delete_matching",
    "get_job",
    "get_jobs",
    "get_stats",
    "parse_id",
    "reschedule_job",
    "reschedule_matching",
    "retry_job",
    "retry_jobs",
    "retry_matching",
]

MAX_PAGE = 1000


def parse_id(job_id: object) -> ObjectId:
    if isinstance(job_id, ObjectId):
        return job_id
    if isinstance(job_id, str):
        try:
            return ObjectId(job_id)
        except InvalidId:
            pass
    raise InvalidOptionError(f"job id must be an ObjectId or its 24-hex string, got {job_id!r}")


def _statuses(status: JobStatus | str | Sequence[JobStatus | str] | None) -> list[str] | None:
    if status is None:
        return None
    values = [status] if isinstance(status, (str, JobStatus)) else list(status)
    try:
        return [JobStatus(v).value for v in values]
    except ValueError:
        raise InvalidOptionError(
            f"unknown status in {values!r}; use {', '.join(s.value for s in JobStatus)}"
        ) from None


@dataclass(frozen=True)
class JobSelector:
    """Which jobs a bulk action touches: all given criteria must hold."""

    name: str | None = None
    status: JobStatus | str | Sequence[JobStatus | str] | None = None
    older_than: datetime | timedelta | None = None  # created before (a time, or an age)
    newer_than: datetime | timedelta | None = None

    def to_filter(self, now: datetime) -> dict[str, Any]:
        flt: dict[str, Any] = {}
        if self.name is not None:
            flt["name"] = self.name
        statuses = _statuses(self.status)
        if statuses is not None:
            flt["status"] = {"$in": statuses}
        created: dict[str, datetime] = {}
        if self.older_than is not None:
            created["$lt"] = _instant(self.older_than, now)
        if self.newer_than is not None:
            created["$gt"] = _instant(self.newer_than, now)
        if created:
            flt["createdAt"] = created
        return flt


def _instant(value: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(value, timedelta):
        return now - value
    if value.tzinfo is None:
        raise InvalidOptionError("selector datetimes must be timezone-aware")
    return value


@dataclass(frozen=True)
class JobPage:
    """One page of ``get_jobs``; pass ``next_cursor`` as ``cursor`` for the next one."""

    jobs: list[Job[Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class QueueStats:
    """Counts per status and real durations (seconds) of finished runs."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    avg_wait: float | None = None  # createdAt -> startedAt
    avg_run: float | None = None  # startedAt -> completedAt

    def count(self, status: JobStatus | str) -> int:
        return self.counts.get(JobStatus(status).value, 0)


def get_job(job_id: ObjectId) -> Operation[Job[Any] | None]:
    doc = yield Call("find_one", ({"_id": job_id},))
    return Job.from_document(doc) if doc is not None else None


def get_jobs(
    *,
    name: str | None,
    status: Any,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> Operation[JobPage]:
    """Newest first, paged by ``_id`` (immutable), so changes under a reader never skip rows."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidOptionError(f"limit must be an int from 1 to {MAX_PAGE}")
    flt = JobSelector(name=name, status=status).to_filter(now)
    if cursor is not None:
        flt["_id"] = {"$lt": parse_id(cursor)}
    docs = yield Call("find", (flt,), {"sort": [("_id", -1)], "limit": limit + 1})
    jobs = [Job.from_document(d) for d in docs[:limit]]
    more = len(docs) > limit
    return JobPage(jobs, str(jobs[-1].id) if more and jobs else None)


def _refuse(job_id: ObjectId, action: str) -> Operation[NoReturn]:
    """Explain why ``action`` matched nothing: the job is unknown, or in the wrong status."""
    current = yield Call("find_one", ({"_id": job_id},))
    if current is None:
        raise JobNotFoundError(f"no job {job_id}", job_id)
    status = current.get("status")
    raise JobStateError(f"cannot {action} job {job_id}: it is {status}", job_id, status, action)


def _cancelled_fields(now: datetime, retention: Retention) -> dict[str, Any]:
    return {
        "status": JobStatus.CANCELLED.value,
        "updatedAt": now,
        "cancelledAt": now,
        **expiry(JobStatus.CANCELLED.value, now, retention),
    }


def cancel_job(
    job_id: ObjectId, now: datetime, retention: Retention = None
) -> Operation[tuple[Job[Any], bool]]:
    """Pending: cancelled now. Processing: cancellation is requested from its worker.

    Returns (job, immediate): ``immediate`` False means the running handler is being stopped.
    """
    # A job can move between pending and processing under us (a run ending, a retry being
    # claimed): try both again rather than refuse a job that is cancellable.
    for _ in range(_CANCEL_ATTEMPTS):
        doc = yield Call(
            "find_one_and_update",
            (
                {"_id": job_id, "status": JobStatus.PENDING.value},
                {"$set": _cancelled_fields(now, retention), "$unset": {"cancelRequested": ""}},
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if doc is not None:
            return Job.from_document(doc), True
        doc = yield Call(
            "find_one_and_update",
            (
                {"_id": job_id, "status": JobStatus.PROCESSING.value},
                {"$set": {"cancelRequested": True, "updatedAt": now}},
            ),
            {"return_document": ReturnDocument.AFTER},
        )
        if doc is not None:
            return Job.from_document(doc), False
        current = yield Call("find_one", ({"_id": job_id}, {"status": 1}))
        if current is None or current.get("status") not in ACTIVE:
            break
    return (yield from _refuse(job_id, "cancel"))


_CANCEL_ATTEMPTS = 5


def retry_job(job_id: ObjectId, now: datetime) -> Operation[Job[Any]]:
    """A failed or cancelled job runs again now, with a fresh attempt budget."""
    try:
        doc = yield Call(
            "find_one_and_update",
            (
                {
                    "_id": job_id,
                    "status": {"$in": [JobStatus.FAILED.value, JobStatus.CANCELLED.value]},
                },
                _retry_update(now),
            ),
            {"return_document": ReturnDocument.AFTER},
        )
    except DuplicateKeyError:
        current = yield Call("find_one", ({"_id": job_id},))
        key = (current or {}).get("uniqueKey")
        holder = yield Call(
            "find_one",
            ({"name": (current or {}).get("name"), "uniqueKey": key, "status": {"$in": ACTIVE}},),
        )
        raise UniqueKeyConflictError(
            f"cannot retry job {job_id}: its unique key {key!r} is held by "
            f"{(holder or {}).get('status', 'another')} job {(holder or {}).get('_id')}",
            job_id,
            (holder or {}).get("_id"),
        ) from None
    if doc is not None:
        return Job.from_document(doc)
    return (yield from _refuse(job_id, "retry"))


def _retry_update(now: datetime) -> dict[str, Any]:
    return {
        "$set": {
            "status": JobStatus.PENDING.value,
            "nextRunAt": now,
            "failCount": 0,
            "updatedAt": now,
        },
        "$unset": {**LEASE_FIELDS, "expireAt": "", "cancelRequested": "", "cancelledAt": ""},
    }


def reschedule_job(job_id: ObjectId, run_at: datetime, now: datetime) -> Operation[Job[Any]]:
    doc = yield Call(
        "find_one_and_update",
        (
            {"_id": job_id, "status": JobStatus.PENDING.value},
            {"$set": {"nextRunAt": run_at, "updatedAt": now}},
        ),
        {"return_document": ReturnDocument.AFTER},
    )
    if doc is not None:
        return Job.from_document(doc)
    return (yield from _refuse(job_id, "reschedule"))


def delete_job(job_id: ObjectId) -> Operation[Job[Any]]:
    """Delete a job that is not running (cancel a running one first)."""
    doc = yield Call(
        "find_one_and_delete", ({"_id": job_id, "status": {"$ne": JobStatus.PROCESSING.value}},)
    )
    if doc is not None:
        return Job.from_document(doc)
    return (yield from _refuse(job_id, "delete"))


def unschedule(name: str, key: str) -> Operation[int]:
    """Delete the pending recurring job of ``(name, key)``; 0 if there is none.

    A run in progress keeps its schedule (its completion stores the next slot), so it is a
    ``JobStateError``: unschedule once it has finished, or cancel it.
    """
    base = {"name": name, "uniqueKey": key, "repeatInterval": {"$exists": True}}
    running = yield Call("find_one", ({**base, "status": JobStatus.PROCESSING.value},))
    if running is not None:
        raise JobStateError(
            f"schedule {name!r} (key {key!r}) is running; unschedule it once the run has "
            "finished, or cancel_job() it",
            running["_id"],
            JobStatus.PROCESSING.value,
            "unschedule",
        )
    result = yield Call("delete_many", ({**base, "status": JobStatus.PENDING.value},))
    return int(result.deleted_count)


def cancel_jobs(
    selector: JobSelector, now: datetime, retention: Retention = None
) -> Operation[int]:
    """Cancel the selected pending jobs (running ones are left to ``cancel_job``)."""
    return (yield from cancel_matching(selector.to_filter(now), now, retention))


def retry_jobs(selector: JobSelector, now: datetime) -> Operation[int]:
    """Retry the selected failed/cancelled jobs; ones whose unique key is taken are skipped."""
    return (yield from retry_matching(selector.to_filter(now), now))


def delete_jobs(selector: JobSelector, now: datetime) -> Operation[int]:
    return (yield from delete_matching(selector.to_filter(now)))


# The statuses each bulk action touches; a filter's own ``status: {$in: [...]}`` narrows them.
BULK_STATUSES: dict[str, tuple[JobStatus, ...]] = {
    "cancel": (JobStatus.PENDING,),
    "retry": (JobStatus.FAILED, JobStatus.CANCELLED),
    "delete": tuple(s for s in JobStatus if s is not JobStatus.PROCESSING),
    "reschedule": (JobStatus.PENDING,),
}


def bulk_filter(action: str, flt: dict[str, Any]) -> dict[str, Any]:
    """``flt`` restricted to the jobs ``action`` may touch (what a preview counts)."""
    allowed = [s.value for s in BULK_STATUSES[action] if _allows(flt, s)]
    return {**flt, "status": {"$in": allowed}}


def cancel_matching(
    flt: dict[str, Any], now: datetime, retention: Retention = None
) -> Operation[int]:
    result = yield Call(
        "update_many",
        (
            bulk_filter("cancel", flt),
            {"$set": _cancelled_fields(now, retention), "$unset": {"cancelRequested": ""}},
        ),
    )
    return int(result.modified_count)


def retry_matching(flt: dict[str, Any], now: datetime) -> Operation[int]:
    docs = yield Call("find", (bulk_filter("retry", flt),), {"projection": {"_id": 1}})
    retried = 0
    for doc in docs:
        try:
            yield from retry_job(doc["_id"], now)
            retried += 1
        except (UniqueKeyConflictError, JobStateError):
            continue
    return retried


def delete_matching(flt: dict[str, Any]) -> Operation[int]:
    result = yield Call("delete_many", (bulk_filter("delete", flt),))
    return int(result.deleted_count)


def reschedule_matching(flt: dict[str, Any], run_at: datetime, now: datetime) -> Operation[int]:
    """Move the matching pending jobs' due time to ``run_at``."""
    result = yield Call(
        "update_many",
        (bulk_filter("reschedule", flt), {"$set": {"nextRunAt": run_at, "updatedAt": now}}),
    )
    return int(result.modified_count)


def _allows(flt: dict[str, Any], status: JobStatus) -> bool:
    wanted = flt.get("status")
    return wanted is None or status.value in wanted.get("$in", [])


def get_stats(name: str | None) -> Operation[QueueStats]:
    match: dict[str, Any] = {"name": name} if name is not None else {}
    pipeline = [
        {"$match": match},
        {
            "$group": {
                "_id": "$status",
                "count": {"$sum": 1},
                "wait": {"$avg": {"$subtract": ["$startedAt", "$createdAt"]}},
                "run": {"$avg": {"$subtract": ["$completedAt", "$startedAt"]}},
            }
        },
    ]
    rows = yield Call("aggregate_list", (pipeline,))
    counts = {row["_id"]: int(row["count"]) for row in rows if isinstance(row["_id"], str)}
    finished = [r for r in rows if r["_id"] == JobStatus.COMPLETED.value]
    wait = finished[0]["wait"] if finished else None
    run = finished[0]["run"] if finished else None
    return QueueStats(
        counts=counts,
        total=sum(counts.values()),
        avg_wait=wait / 1000 if wait is not None else None,
        avg_run=run / 1000 if run is not None else None,
    )


# -- read-only queries for ``monque stats`` ------------------------------------------------

__all__ += [
    "LiveInstance",
    "QueueTimings",
    "Throughput",
    "count_by_name",
    "get_throughput",
    "get_timings",
    "live_instances",
    "running_by_owner",
]


def _name_match(name: str | None) -> dict[str, Any]:
    return {"name": name} if name is not None else {}


def count_by_name(name: str | None = None) -> Operation[dict[str, dict[str, int]]]:
    """Jobs per name and status: ``{name: {status: count}}`` (statuses with no jobs absent)."""
    pipeline = [
        {"$match": _name_match(name)},
        {"$group": {"_id": {"name": "$name", "status": "$status"}, "count": {"$sum": 1}}},
    ]
    rows = yield Call("aggregate_list", (pipeline,))
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        key = row["_id"] if isinstance(row["_id"], dict) else {}
        job_name, status = key.get("name"), key.get("status")
        if isinstance(job_name, str) and isinstance(status, str):
            counts.setdefault(job_name, {})[status] = int(row["count"])
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Throughput:
    """Jobs whose last run completed, or whose last failed attempt ended, in the last
    ``minutes`` (by ``completedAt`` / ``failedAt``; a job counts once per window)."""

    minutes: int
    completed: int
    failed: int

    @property
    def completed_per_minute(self) -> float:
        return self.completed / self.minutes

    @property
    def failed_per_minute(self) -> float:
        return self.failed / self.minutes


def get_throughput(
    name: str | None, now: datetime, minutes: Sequence[int] = (5, 15)
) -> Operation[list[Throughput]]:
    """Completed and failed runs per window, with one aggregation (dates from ``now``, the
    server's time: no ``$$NOW``)."""
    windows = sorted({int(m) for m in minutes})
    if not windows or windows[0] < 1:
        raise InvalidOptionError("throughput windows must be whole minutes >= 1")
    since = {m: now - timedelta(minutes=m) for m in windows}
    oldest = since[windows[-1]]
    group: dict[str, Any] = {"_id": None}
    for m in windows:
        for label, field_name in (("c", "$completedAt"), ("f", "$failedAt")):
            group[f"{label}{m}"] = {"$sum": {"$cond": [{"$gte": [field_name, since[m]]}, 1, 0]}}
    pipeline = [
        {
            "$match": {
                **_name_match(name),
                "$or": [{"completedAt": {"$gte": oldest}}, {"failedAt": {"$gte": oldest}}],
            }
        },
        {"$group": group},
    ]
    rows = yield Call("aggregate_list", (pipeline,))
    row = rows[0] if rows else {}
    return [Throughput(m, int(row.get(f"c{m}", 0)), int(row.get(f"f{m}", 0))) for m in windows]


@dataclass(frozen=True)
class QueueTimings:
    """How long jobs wait and run (seconds).

    ``avg_wait`` is measured from ``nextRunAt`` (when a job became due) to ``startedAt``, so
    delayed and scheduled jobs do not look slow; ``avg_run`` from ``startedAt`` to
    ``completedAt``; both over the completed jobs still stored. ``due`` pending jobs are due
    now, the oldest of them for ``oldest_due`` seconds.
    """

    avg_wait: float | None = None
    avg_run: float | None = None
    completed: int = 0
    due: int = 0
    oldest_due: float | None = None


def get_timings(name: str | None, now: datetime) -> Operation[QueueTimings]:
    finished = [
        {
            "$match": {
                **_name_match(name),
                "status": JobStatus.COMPLETED.value,
                "startedAt": {"$type": "date"},
                "nextRunAt": {"$type": "date"},
                "completedAt": {"$type": "date"},
            }
        },
        {
            "$group": {
                "_id": None,
                "count": {"$sum": 1},
                "wait": {"$avg": {"$max": [0, {"$subtract": ["$startedAt", "$nextRunAt"]}]}},
                "run": {"$avg": {"$max": [0, {"$subtract": ["$completedAt", "$startedAt"]}]}},
            }
        },
    ]
    rows = yield Call("aggregate_list", (finished,))
    done = rows[0] if rows else {}
    due_pipeline = [
        {
            "$match": {
                **_name_match(name),
                "status": JobStatus.PENDING.value,
                "nextRunAt": {"$lte": now},
            }
        },
        {"$group": {"_id": None, "count": {"$sum": 1}, "oldest": {"$min": "$nextRunAt"}}},
    ]
    rows = yield Call("aggregate_list", (due_pipeline,))
    due = rows[0] if rows else {}
    oldest = due.get("oldest")
    wait, run = done.get("wait"), done.get("run")
    return QueueTimings(
        avg_wait=wait / 1000 if wait is not None else None,
        avg_run=run / 1000 if run is not None else None,
        completed=int(done.get("count", 0)),
        due=int(due.get("count", 0)),
        oldest_due=(
            max((now - utc(oldest)).total_seconds(), 0.0) if isinstance(oldest, datetime) else None
        ),
    )


def running_by_owner() -> Operation[dict[str, int]]:
    """Processing jobs per ``claimedBy`` (the instance id running them)."""
    pipeline = [
        {"$match": {"status": JobStatus.PROCESSING.value}},
        {"$group": {"_id": "$claimedBy", "count": {"$sum": 1}}},
    ]
    rows = yield Call("aggregate_list", (pipeline,))
    return {row["_id"]: int(row["count"]) for row in rows if isinstance(row["_id"], str)}


@dataclass(frozen=True)
class LiveInstance:
    """A running worker as registered in ``<collection>_instances``."""

    id: str
    host: str | None
    pid: int | None
    started_at: datetime | None
    last_seen: datetime | None
    expires_at: datetime | None
    running: int = 0  # jobs it holds (filled in from the jobs collection)


def live_instances(now: datetime) -> Operation[list[LiveInstance]]:
    """Instances whose registration has not expired; run on the instances collection."""
    docs = yield Call("find", ({"expiresAt": {"$gte": now}},), {"sort": [("startedAt", 1)]})
    return [
        LiveInstance(
            id=str(doc["_id"]),
            host=doc.get("host") if isinstance(doc.get("host"), str) else None,
            pid=doc.get("pid") if isinstance(doc.get("pid"), int) else None,
            started_at=_when(doc.get("startedAt")),
            last_seen=_when(doc.get("lastSeen")),
            expires_at=_when(doc.get("expiresAt")),
        )
        for doc in docs
    ]


def _when(value: object) -> datetime | None:
    return utc(value) if isinstance(value, datetime) else None
