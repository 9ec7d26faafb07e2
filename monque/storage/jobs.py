"""Job operations: the queries and updates, each written once for both drivers.

Every transition of a claimed job filters on ``{_id, status: 'processing', claimedBy: owner}``:
a worker that lost a job can never overwrite what the new owner wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from monque.job import JobStatus
from monque.storage.calls import Call, Operation
from monque.storage.indexes import ACTIVE

__all__ = [
    "CLAIM_SORT",
    "LEASE_FIELDS",
    "claim",
    "enqueue_unique",
    "find_expired",
    "insert_job",
    "insert_many",
    "owned_filter",
    "recover",
    "release",
    "renew_leases",
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


def claim(
    names: Sequence[str], owner: str, now: datetime, lock_timeout: float
) -> Operation[dict[str, Any] | None]:
    """Atomically take the most urgent due job among ``names``."""
    flt: dict[str, Any] = {
        "name": names[0] if len(names) == 1 else {"$in": list(names)},
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$lte": now},
    }
    update = {
        "$set": {
            "status": JobStatus.PROCESSING.value,
            "claimedBy": owner,
            "lockedAt": now,
            "lastHeartbeat": now,
            "lockExpiresAt": now + timedelta(seconds=lock_timeout),
            "startedAt": now,
            "updatedAt": now,
        }
    }
    doc: dict[str, Any] | None = yield Call(
        "find_one_and_update",
        (flt, update),
        {"sort": CLAIM_SORT, "return_document": ReturnDocument.AFTER},
    )
    return doc


def owned_filter(job_id: ObjectId, owner: str) -> dict[str, Any]:
    return {"_id": job_id, "status": JobStatus.PROCESSING.value, "claimedBy": owner}


def transition(job_id: ObjectId, owner: str, update: dict[str, Any]) -> Operation[bool]:
    """Apply an owner-guarded update; False if this owner no longer holds the job."""
    result = yield Call("update_one", (owned_filter(job_id, owner), update))
    return bool(result.matched_count)


def renew_leases(
    ids: Sequence[ObjectId], owner: str, now: datetime, lock_timeout: float
) -> Operation[tuple[list[ObjectId], list[ObjectId]]]:
    """Extend the leases of the jobs this owner runs.

    Returns (lost, cancel_requested): ids this owner no longer holds, and held ids whose
    cancellation was requested (their leases are left to run out if the handler hangs).
    """
    flt = {"_id": {"$in": list(ids)}, "status": JobStatus.PROCESSING.value, "claimedBy": owner}
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


def release(ids: Sequence[ObjectId], owner: str, now: datetime) -> Operation[int]:
    """Hand running jobs back to pending (shutdown): no attempt is counted."""
    flt = {"_id": {"$in": list(ids)}, "status": JobStatus.PROCESSING.value, "claimedBy": owner}
    update = {
        "$set": {"status": JobStatus.PENDING.value, "nextRunAt": now, "updatedAt": now},
        "$unset": LEASE_FIELDS,
    }
    result = yield Call("update_many", (flt, update))
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
