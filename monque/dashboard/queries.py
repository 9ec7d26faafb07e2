"""The dashboard's reads, each one index-backed on mongod, and the indexes that back them.

Lists are newest first and paged by keyset on ``_id`` (``before``/``after`` an id, never a
``skip``), so page 1,000 costs what page 1 does. The filters map onto the indexes below:

- no name, no status: the ``_id`` index;
- statuses only: ``monque_dash_status`` (status, _id desc); several statuses merge their index
  ranges in ``_id`` order (SORT_MERGE), no in-memory sort;
- a name (with or without statuses): ``monque_dash_name`` (name, status, _id desc), with all
  statuses listed when none is chosen, for the same merge;
- a time range: bounds on ``_id``, whose first four bytes are the document's creation time;
- text in the failure reason: a filter applied to the index range of the other criteria.

Counts per name and status are ``count`` commands over ``monque_dash_name`` (COUNT_SCAN, no
document read); the throughput chart reads only jobs that finished or failed in the last hour
(``monque_dash_completed``, ``monque_dash_failed``); schedules come from a partial index that
holds recurring jobs only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from monque.errors import InvalidJobDocumentError
from monque.job import Job, JobStatus
from monque.storage.calls import Call, Operation

__all__ = [
    "DASHBOARD_INDEXES",
    "PAGE_SIZE",
    "JobFilter",
    "JobsPage",
    "ScheduleRow",
    "count_matching",
    "counts_by_name",
    "list_jobs",
    "running_jobs",
    "schedules",
    "throughput",
]

STATUSES = tuple(s.value for s in JobStatus)
PAGE_SIZE = 50
MAX_NAMES = 200  # names shown on the overview; more are summarized
MAX_RUNNING = 500
MAX_SCHEDULES = 500

DASHBOARD_INDEXES = [
    IndexModel([("status", ASCENDING), ("_id", DESCENDING)], name="monque_dash_status"),
    IndexModel(
        [("name", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)], name="monque_dash_name"
    ),
    IndexModel(
        [("completedAt", DESCENDING)],
        name="monque_dash_completed",
        partialFilterExpression={"completedAt": {"$exists": True}},
    ),
    IndexModel(
        [("failedAt", DESCENDING)],
        name="monque_dash_failed",
        partialFilterExpression={"failedAt": {"$exists": True}},
    ),
    IndexModel(
        [("name", ASCENDING), ("_id", ASCENDING)],
        name="monque_dash_schedules",
        partialFilterExpression={"repeatInterval": {"$exists": True}},
    ),
]


@dataclass(frozen=True)
class JobFilter:
    """What the jobs page shows: every given criterion must hold."""

    name: str | None = None
    statuses: tuple[str, ...] = ()  # none: every status
    created_from: datetime | None = None  # creation time (the _id's), inclusive
    created_to: datetime | None = None  # exclusive
    reason: str | None = None  # text in the failure reason, any case

    def query(self) -> dict[str, Any]:
        flt: dict[str, Any] = {}
        if self.name is not None:
            flt["name"] = self.name
        if self.statuses or self.name is not None:
            # With a name, every status is listed so the (name, status, _id) ranges merge.
            flt["status"] = {"$in": list(self.statuses or STATUSES)}
        ids: dict[str, ObjectId] = {}
        if self.created_from is not None:
            ids["$gte"] = ObjectId.from_datetime(_ceil_second(self.created_from))
        if self.created_to is not None:
            ids["$lt"] = ObjectId.from_datetime(_ceil_second(self.created_to))
        if ids:
            flt["_id"] = ids
        if self.reason:
            flt["failReason"] = {"$regex": re.escape(self.reason), "$options": "i"}
        return flt

    @property
    def is_empty(self) -> bool:
        return self == JobFilter()


def _ceil_second(value: datetime) -> datetime:
    # ObjectIds keep whole seconds: a bound inside a second moves to the next one.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    floor = aware.replace(microsecond=0)
    return floor if floor == aware else floor + timedelta(seconds=1)


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job[Any] | BadRow]
    older: str | None  # pass as ``before`` for the next (older) page
    newer: str | None  # pass as ``after`` for the previous (newer) page


def _tighter(flt: dict[str, Any], op: str, bound: ObjectId) -> dict[str, Any]:
    ids = dict(flt.get("_id", {}))
    current = ids.get(op)
    if current is None or (bound < current if op == "$lt" else bound > current):
        ids[op] = bound
    return {**flt, "_id": ids}


def list_hint(flt: JobFilter) -> list[tuple[str, int]] | None:
    """Lists without a name or status read the ``_id`` index: mongod's own choice for a sort on
    ``_id``, named so that a server which picks no index for a sort by itself is told too.
    The other shapes are left to the planner (their indexes may be managed by the user)."""
    if flt.name is None and not flt.statuses:
        return [("_id", 1)]
    return None


# A list shows none of these: a page of 50 jobs never reads their (possibly large) payloads.
LIST_PROJECTION = {"data": 0, "failTraceback": 0, "progress": 0, "traceContext": 0}


@dataclass(frozen=True)
class BadStatus:
    value: str


@dataclass(frozen=True)
class BadRow:
    """A stored document that is not a valid job (written by hand, or corrupted): shown with
    what can be read of it and why it is not a job, never an error page."""

    id: Any
    name: str
    status: BadStatus
    problem: str
    raw: dict[str, Any]
    next_run_at: datetime | None = None
    created_at: datetime | None = None
    fail_count: Any = None
    fail_reason: str | None = None
    claimed_by: str | None = None

    malformed = True


def row(doc: dict[str, Any]) -> Job[Any] | BadRow:
    try:
        return Job.from_document(doc)
    except InvalidJobDocumentError as exc:

        def text(key: str) -> str | None:
            value = doc.get(key)
            return value if isinstance(value, str) else None

        def when(key: str) -> datetime | None:
            value = doc.get(key)
            return value if isinstance(value, datetime) else None

        name = text("name")
        return BadRow(
            id=doc.get("_id"),
            name=name if name is not None else repr(doc.get("name")),
            status=BadStatus(str(doc.get("status"))),
            problem=str(exc),
            raw=doc,
            next_run_at=when("nextRunAt"),
            created_at=when("createdAt"),
            fail_count=doc.get("failCount"),
            fail_reason=text("failReason"),
            claimed_by=text("claimedBy"),
        )


Row = Job[Any] | BadRow


def list_jobs(
    flt: JobFilter,
    *,
    before: ObjectId | None = None,
    after: ObjectId | None = None,
    limit: int = PAGE_SIZE,
) -> Operation[JobsPage]:
    """A page of jobs newest first: those older than ``before``, or the page just newer than
    ``after``, or the newest."""
    query = flt.query()
    hint = list_hint(flt)
    extra: dict[str, Any] = {"projection": LIST_PROJECTION, "limit": limit + 1}
    if hint is not None:
        extra["hint"] = hint
    if after is not None:
        query = _tighter(query, "$gt", after)
        docs = yield Call("find", (query,), {"sort": [("_id", 1)], **extra})
        more_newer = len(docs) > limit
        docs = list(reversed(docs[:limit]))
        jobs = [row(d) for d in docs]
        return JobsPage(
            jobs,
            older=str(jobs[-1].id) if jobs else None,
            newer=str(jobs[0].id) if more_newer and jobs else None,
        )
    if before is not None:
        query = _tighter(query, "$lt", before)
    docs = yield Call("find", (query,), {"sort": [("_id", -1)], **extra})
    jobs = [row(d) for d in docs[:limit]]
    return JobsPage(
        jobs,
        older=str(jobs[-1].id) if len(docs) > limit and jobs else None,
        newer=str(jobs[0].id) if before is not None and jobs else None,
    )


def get_row(job_id: ObjectId) -> Operation[Row | None]:
    doc = yield Call("find_one", ({"_id": job_id},))
    return row(doc) if doc is not None else None


def newest_id(query: dict[str, Any]) -> Operation[ObjectId | None]:
    """The newest ``_id`` matching: the bound a bulk action's preview fixes."""
    docs = yield Call(
        "find", (query,), {"sort": [("_id", -1)], "limit": 1, "projection": {"_id": 1}}
    )
    return docs[0]["_id"] if docs else None


def count_matching(query: dict[str, Any]) -> Operation[int]:
    count: int = yield Call("count_documents", (query,))
    return count


def counts_by_name(indexes: frozenset[str] = frozenset()) -> Operation[dict[str, dict[str, int]]]:
    """Jobs per name and status (absent statuses: 0), names sorted: one aggregation that reads
    ``monque_dash_name`` from end to end, covered on mongod (index keys only, no document), in
    one round trip however many names there are."""
    pipeline = [{"$group": {"_id": {"n": "$name", "s": "$status"}, "c": {"$sum": 1}}}]
    extra = {"hint": "monque_dash_name"} if "monque_dash_name" in indexes else {}
    rows = yield Call("aggregate_list", (pipeline,), extra)
    counts: dict[str, dict[str, int]] = {}
    for item in rows:
        key = item.get("_id") if isinstance(item.get("_id"), dict) else {}
        name, status = key.get("n"), key.get("s")
        if isinstance(name, str) and status in STATUSES:
            counts.setdefault(name, dict.fromkeys(STATUSES, 0))[status] = int(item["c"])
    return dict(sorted(counts.items()))


def throughput(
    now: datetime, minutes: int = 60, indexes: frozenset[str] = frozenset()
) -> Operation[list[tuple[datetime, int, int]]]:
    """Completions and failed attempts per minute over the last ``minutes`` (a job counts once
    per minute it finished or failed in; earlier runs of a recurring job are not stored)."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    buckets = {start + timedelta(minutes=i): [0, 0] for i in range(minutes)}
    for column, fld in ((0, "completedAt"), (1, "failedAt")):
        pipeline = [
            {"$match": {fld: {"$exists": True, "$gte": start}}},
            {
                "$group": {
                    "_id": {"$floor": {"$divide": [{"$subtract": [f"${fld}", start]}, 60_000]}},
                    "n": {"$sum": 1},
                }
            },
        ]
        # Named where it exists (a planner may not match a partial index to the $exists).
        extra = {"hint": _HINTS[fld]} if _HINTS[fld] in indexes else {}
        rows = yield Call("aggregate_list", (pipeline,), extra)
        for row in rows:
            index = row.get("_id")
            if isinstance(index, (int, float)) and 0 <= index < minutes:
                buckets[start + timedelta(minutes=int(index))][column] += int(row["n"])
    return [(minute, done, failed) for minute, (done, failed) in sorted(buckets.items())]


_HINTS = {"completedAt": "monque_dash_completed", "failedAt": "monque_dash_failed"}


def running_jobs() -> Operation[list[Job[Any]]]:
    docs = yield Call(
        "find",
        ({"status": JobStatus.PROCESSING.value},),
        {"sort": [("_id", -1)], "limit": MAX_RUNNING, "projection": {"data": 0}},
    )
    return [r for r in map(row, docs) if isinstance(r, Job)]


@dataclass(frozen=True)
class ScheduleRow:
    job: Job[Any] | BadRow
    next_runs: list[datetime]
    error: str | None = None  # the cron expression or zone this host cannot evaluate


def schedules(name: str | None = None) -> Operation[list[Job[Any] | BadRow]]:
    query: dict[str, Any] = {"repeatInterval": {"$exists": True}}
    if name is not None:
        query["name"] = name
    docs = yield Call(
        "find",
        (query,),
        {
            "sort": [("name", 1), ("_id", 1)],
            "limit": MAX_SCHEDULES,
            "projection": {"data": 0},
        },
    )
    return [row(d) for d in docs]


def explainable(collection: str, now: datetime, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Every list and count command the dashboard sends, as (what, command), for the explain
    test on mongod (``{"explain": command}``)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for label, flt in (
        ("all", JobFilter()),
        ("status", JobFilter(statuses=("failed",))),
        ("statuses", JobFilter(statuses=("failed", "cancelled"))),
        ("name", JobFilter(name=name)),
        ("name+status", JobFilter(name=name, statuses=("pending",))),
        ("range", JobFilter(created_from=now - timedelta(hours=1), created_to=now)),
        ("status+range", JobFilter(statuses=("failed",), created_from=now - timedelta(hours=1))),
        ("reason", JobFilter(statuses=("failed",), reason="boom")),
    ):
        hint = list_hint(flt)
        for way, order in (("older", -1), ("newer", 1)):
            query = flt.query()
            query = _tighter(query, "$lt" if order < 0 else "$gt", ObjectId.from_datetime(now))
            find = {"find": collection, "filter": query, "sort": {"_id": order}, "limit": 51}
            if hint is not None:
                find["hint"] = dict(hint)
            out.append((f"list {label} ({way})", find))
    for label, query in (
        ("count name+status", {"name": name, "status": "pending"}),
        ("count bulk", {"status": {"$in": ["failed", "cancelled"]}}),
        ("count bulk name", {"name": name, "status": {"$in": ["failed", "cancelled"]}}),
    ):
        # count_documents: an aggregation of $match and a $group that counts.
        pipeline = [{"$match": query}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
        out.append((label, {"aggregate": collection, "pipeline": pipeline, "cursor": {}}))
    group = [{"$group": {"_id": {"n": "$name", "s": "$status"}, "c": {"$sum": 1}}}]
    out.append(
        (
            "counts by name",
            {"aggregate": collection, "pipeline": group, "hint": "monque_dash_name", "cursor": {}},
        )
    )
    for fld in ("completedAt", "failedAt"):
        out.append(
            (
                f"throughput {fld}",
                {
                    "aggregate": collection,
                    "pipeline": [
                        {"$match": {fld: {"$exists": True, "$gte": now - timedelta(hours=1)}}},
                        {"$group": {"_id": None, "n": {"$sum": 1}}},
                    ],
                    "hint": _HINTS[fld],
                    "cursor": {},
                },
            )
        )
    out.append(
        (
            "running",
            {"find": collection, "filter": {"status": "processing"}, "sort": {"_id": -1}},
        )
    )
    out.append(
        (
            "schedules",
            {
                "find": collection,
                "filter": {"repeatInterval": {"$exists": True}},
                "sort": {"name": 1, "_id": 1},
            },
        )
    )
    return out
