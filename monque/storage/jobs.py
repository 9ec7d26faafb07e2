"""Job operations: the queries and updates, each written once for both drivers.

Every transition of a claimed job filters on ``{_id, status: 'processing', claimedBy: owner}``:
a worker that lost a job can never overwrite what the new owner wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from monque.job import JobStatus
from monque.storage.calls import Call, Operation
from monque.storage.indexes import ACTIVE

__all__ = [
    "CLAIM_SORT",
    "LEASE_FIELDS",
    "apply_transitions",
    "claim",
    "claim_batch",
    "enqueue_unique",
    "find_expired",
    "insert_job",
    "insert_many",
    "next_due",
    "owned_filter",
    "owned_filter_many",
    "recover",
    "release",
    "renew_leases",
    "to_millis",
    "transition",
    "upsert_schedule",
]

CLAIM_SORT = [("priority", -1), ("nextRunAt", 1)]
# Cleared whenever a job stops being held by a worker.
LEASE_FIELDS = {"lockedAt": "", "claimedBy": "", "lastHeartbeat": "", "lockExpiresAt": ""}
# A unique upsert can lose a race to a concurrent insert, or find a job that completed between
# its two steps; a few rounds always settle it.
_UPSERT_ATTEMPTS = 5


def insert_job(doc: dict[str, Any]) -> Operation[tuple[dict[str, Any], bool]]:
    yield Call("insert_one", (doc,))
    return doc, True


def enqueue_unique(doc: dict[str, Any]) -> Operation[tuple[dict[str, Any], bool]]:
    """Insert ``doc`` unless an active job has its (name, uniqueKey); return (job, created)."""
    key = {"name": doc["name"], "uniqueKey": doc["uniqueKey"], "status": {"$in": ACTIVE}}
    for _ in range(_UPSERT_ATTEMPTS):
        try:
            result = yield Call("update_one", (key, {"$setOnInsert": doc}), {"upsert": True})
        except DuplicateKeyError:
            continue  # a concurrent enqueue inserted it first: read the winner
        if result.upserted_id is not None:
            return doc, True
        existing = yield Call("find_one", (key,))
        if existing is not None:
            return existing, False
    raise RuntimeError(f"unique enqueue of {doc['name']!r} did not settle")  # pragma: no cover


def upsert_schedule(doc: dict[str, Any]) -> Operation[tuple[dict[str, Any], bool]]:
    """Create or update a recurring job identified by (name, uniqueKey).

    Same cron and timezone: only data and priority are refreshed, the next run stays. A changed
    cron or timezone also moves ``nextRunAt`` to the new expression's next time.
    """
    key = {"name": doc["name"], "uniqueKey": doc["uniqueKey"], "status": {"$in": ACTIVE}}
    refresh = {"data": doc["data"], "priority": doc["priority"], "updatedAt": doc["updatedAt"]}
    reschedule = {
        **refresh,
        "repeatInterval": doc["repeatInterval"],
        "timezone": doc["timezone"],
        "nextRunAt": doc["nextRunAt"],
    }
    on_insert = {k: v for k, v in doc.items() if k not in reschedule}
    unchanged = {**key, "repeatInterval": doc["repeatInterval"], "timezone": doc["timezone"]}
    for _ in range(_UPSERT_ATTEMPTS):
        same = yield Call(
            "find_one_and_update",
            (unchanged, {"$set": refresh}),
            {"return_document": ReturnDocument.AFTER},
        )
        if same is not None:
            return same, False
        try:
            stored = yield Call(
                "find_one_and_update",
                (key, {"$set": reschedule, "$setOnInsert": on_insert}),
                {"upsert": True, "return_document": ReturnDocument.AFTER},
            )
        except DuplicateKeyError:
            continue
        return stored, stored["_id"] == doc["_id"]
    raise RuntimeError(f"schedule of {doc['name']!r} did not settle")  # pragma: no cover


def insert_many(docs: list[dict[str, Any]]) -> Operation[list[tuple[dict[str, Any], bool]]]:
    """One unordered ``insert_many``; a document whose unique key an active job holds is
    answered with that job (created False), the rest are inserted."""
    if not docs:
        return []
    duplicates: set[int] = set()
    try:
        yield Call("insert_many", (docs,), {"ordered": False})
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        others = [e for e in errors if e.get("code") != 11000]
        if others:
            raise
        duplicates = {e["index"] for e in errors}
    results: list[tuple[dict[str, Any], bool]] = []
    for index, doc in enumerate(docs):
        if index not in duplicates:
            results.append((doc, True))
            continue
        key = {"name": doc["name"], "uniqueKey": doc["uniqueKey"], "status": {"$in": ACTIVE}}
        existing = yield Call("find_one", (key,))
        if existing is None:  # finished meanwhile: the key is free again
            existing, created = yield from enqueue_unique(doc)
            results.append((existing, created))
        else:
            results.append((existing, False))
    return results


def _due(names: Sequence[str], now: datetime) -> dict[str, Any]:
    return {
        "name": names[0] if len(names) == 1 else {"$in": list(names)},
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$lte": now},
    }


def _claim_fields(owner: str, now: datetime, lock_timeout: float) -> dict[str, Any]:
    return {
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
        "lockedAt": now,
        "lastHeartbeat": now,
        "lockExpiresAt": now + timedelta(seconds=lock_timeout),
        "startedAt": now,
        "updatedAt": now,
    }


def to_millis(when: datetime) -> datetime:
    """``when`` as BSON stores it (millisecond precision), so it can be matched exactly."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def claim(
    names: Sequence[str], owner: str, now: datetime, lock_timeout: float
) -> Operation[dict[str, Any] | None]:
    """Atomically take the most urgent due job among ``names``."""
    doc: dict[str, Any] | None = yield Call(
        "find_one_and_update",
        (_due(names, now), {"$set": _claim_fields(owner, now, lock_timeout)}),
        {"sort": CLAIM_SORT, "return_document": ReturnDocument.AFTER},
    )
    return doc


def claim_batch(
    slots: Mapping[str, int], limit: int, owner: str, now: datetime, lock_timeout: float
) -> Operation[tuple[list[dict[str, Any]], bool]]:
    """Take up to ``slots[name]`` due jobs of each name, ``limit`` in all, most urgent first.

    Returns the claimed jobs and whether the due jobs ran out (no need to claim again).

    One free slot: a single ``find_one_and_update``. More: read the most urgent due jobs, then
    claim exactly those with one ``update_many`` guarded per document on ``updatedAt`` (so a
    job changed or taken in between is skipped, never run from a stale read) and on
    ``status``/``nextRunAt``. Only jobs the update really took are returned; none is started
    before that write is acknowledged.
    """
    names = [name for name, free in slots.items() if free > 0]
    wanted = sum(slots[name] for name in names)
    if wanted == 0 or limit < 1:
        return [], False
    if wanted == 1 or limit == 1:
        doc = yield from claim(names, owner, now, lock_timeout)
        return ([], True) if doc is None else ([doc], False)
    now = to_millis(now)
    candidates: list[dict[str, Any]] = yield Call(
        "find", (_due(names, now),), {"sort": CLAIM_SORT, "limit": wanted}
    )
    exhausted = len(candidates) < wanted
    left = {name: slots[name] for name in names}
    chosen: list[dict[str, Any]] = []
    for doc in candidates:
        if len(chosen) < limit and left.get(doc.get("name"), 0) > 0:  # type: ignore[arg-type]
            left[doc["name"]] -= 1
            chosen.append(doc)
    if not chosen:
        return [], exhausted
    fields = _claim_fields(owner, now, lock_timeout)
    guard = {
        "$or": [{"_id": doc["_id"], "updatedAt": doc.get("updatedAt")} for doc in chosen],
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$lte": now},
    }
    ids = [doc["_id"] for doc in chosen]
    try:
        result = yield Call("update_many", (guard, {"$set": fields}))
    except PyMongoError:
        # Unknown outcome: hand back whatever this batch may hold, then report the error.
        with contextlib.suppress(PyMongoError):
            batch = {**owned_filter_many(ids, owner), "lockedAt": now}
            yield Call("update_many", (batch, _release_update(now)))
        raise
    if result.modified_count != len(chosen):
        held: list[dict[str, Any]] = yield Call(
            "find",
            ({**owned_filter_many(ids, owner), "lockedAt": now},),
            {"projection": {"_id": 1}},
        )
        taken = {doc["_id"] for doc in held}
        chosen = [doc for doc in chosen if doc["_id"] in taken]
    return [{**doc, **fields} for doc in chosen], exhausted


def next_due(names: Sequence[str]) -> Operation[datetime | None]:
    """When the earliest pending job among ``names`` is due (served by ``monque_next_due``)."""
    flt = {
        "name": names[0] if len(names) == 1 else {"$in": list(names)},
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$type": "date"},  # a malformed document must not hide the rest
    }
    doc: dict[str, Any] | None = yield Call(
        "find_one",
        (flt,),
        {"sort": [("nextRunAt", 1)], "projection": {"_id": 0, "nextRunAt": 1}},
    )
    if doc is None or not isinstance(doc.get("nextRunAt"), datetime):
        return None
    due: datetime = doc["nextRunAt"]
    return due if due.tzinfo is not None else due.replace(tzinfo=timezone.utc)


def owned_filter(job_id: ObjectId, owner: str) -> dict[str, Any]:
    return {"_id": job_id, "status": JobStatus.PROCESSING.value, "claimedBy": owner}


def owned_filter_many(ids: Sequence[ObjectId], owner: str) -> dict[str, Any]:
    return {"_id": {"$in": list(ids)}, "status": JobStatus.PROCESSING.value, "claimedBy": owner}


def transition(job_id: ObjectId, owner: str, update: dict[str, Any]) -> Operation[bool]:
    """Apply an owner-guarded update; False if this owner no longer holds the job."""
    result = yield Call("update_one", (owned_filter(job_id, owner), update))
    return bool(result.matched_count)


def apply_transitions(
    items: Sequence[tuple[ObjectId, dict[str, Any]]], owner: str
) -> Operation[list[bool]]:
    """Apply several owner-guarded updates in one unordered ``bulk_write``.

    Returns, per item, whether it was applied. When fewer matched than were sent (a job was
    lost, or a retried batch was partly applied before), one read settles which: an applied
    update left its own ``status`` and ``updatedAt`` (each update sets both) on the document.
    """
    if len(items) == 1:
        job_id, update = items[0]
        applied = yield from transition(job_id, owner, update)
        return [applied]
    requests = [UpdateOne(owned_filter(job_id, owner), update) for job_id, update in items]
    result = yield Call("bulk_write", (requests,), {"ordered": False})
    if result.matched_count == len(items):
        return [True] * len(items)
    docs: list[dict[str, Any]] = yield Call(
        "find",
        ({"_id": {"$in": [job_id for job_id, _ in items]}},),
        {"projection": {"status": 1, "updatedAt": 1}},
    )
    found = {doc["_id"]: doc for doc in docs}
    return [_left_by(found.get(job_id), update) for job_id, update in items]


def _left_by(doc: dict[str, Any] | None, update: dict[str, Any]) -> bool:
    fields = update.get("$set", {})
    if doc is None or doc.get("status") != fields.get("status"):
        return False
    stored, written = doc.get("updatedAt"), fields.get("updatedAt")
    if not isinstance(stored, datetime) or not isinstance(written, datetime):
        return False
    return _utc_millis(stored) == _utc_millis(written)


def _utc_millis(when: datetime) -> datetime:
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return to_millis(when)


def renew_leases(
    ids: Sequence[ObjectId], owner: str, now: datetime, lock_timeout: float
) -> Operation[tuple[list[ObjectId], list[ObjectId]]]:
    """Extend the leases of the jobs this owner runs.

    Returns (lost, cancel_requested): ids this owner no longer holds, and held ids whose
    cancellation was requested (their leases are left to run out if the handler hangs).
    """
    flt = owned_filter_many(ids, owner)
    update = {
        "$set": {"lastHeartbeat": now, "lockExpiresAt": now + timedelta(seconds=lock_timeout)}
    }
    result = yield Call("update_many", ({**flt, "cancelRequested": {"$ne": True}}, update))
    if result.matched_count == len(ids):
        return [], []
    still: list[dict[str, Any]] = yield Call(
        "find", (flt,), {"projection": {"_id": 1, "cancelRequested": 1}}
    )
    held = {doc["_id"] for doc in still}
    cancel = [doc["_id"] for doc in still if doc.get("cancelRequested")]
    return [job_id for job_id in ids if job_id not in held], cancel


def find_expired(now: datetime, limit: int) -> Operation[list[dict[str, Any]]]:
    flt = {"status": JobStatus.PROCESSING.value, "lockExpiresAt": {"$lt": now}}
    docs: list[dict[str, Any]] = yield Call("find", (flt,), {"limit": limit})
    return docs


def _release_update(now: datetime) -> dict[str, Any]:
    # nextRunAt stays: a claimed job was due, so it keeps its place at the head of the queue.
    return {
        "$set": {"status": JobStatus.PENDING.value, "updatedAt": now},
        "$unset": LEASE_FIELDS,
    }


def release(ids: Sequence[ObjectId], owner: str, now: datetime) -> Operation[int]:
    """Hand running jobs back to pending (shutdown): no attempt is counted."""
    result = yield Call("update_many", (owned_filter_many(ids, owner), _release_update(now)))
    return int(result.modified_count)


def recover(
    job_id: ObjectId, owner: str | None, now: datetime, update: dict[str, Any]
) -> Operation[bool]:
    """Apply ``update`` to a job whose lease expired, unless its owner renewed it meanwhile."""
    flt = {
        "_id": job_id,
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
        "lockExpiresAt": {"$lt": now},
    }
    result = yield Call("update_one", (flt, update))
    return bool(result.modified_count)
