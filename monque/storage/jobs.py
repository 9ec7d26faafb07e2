"""Job operations: the queries and updates, each written once for both drivers.

Every claim writes a fresh ``claimToken``; every later write of that run (renewal, progress,
outcome) filters on ``{_id, status: 'processing', claimedBy: owner, claimToken: token}``. A run
that lost its job can never overwrite what a later claim wrote, even a later claim of the same
instance.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from monque.job import JobStatus
from monque.storage.calls import Call, Operation
from monque.storage.indexes import ACTIVE

__all__ = [
    "APPLIED",
    "CANCEL",
    "CLAIM_SORT",
    "LEASE_FIELDS",
    "LOST",
    "OutcomeWrite",
    "apply_transitions",
    "cancel_requested_pending",
    "cancel_requests",
    "claim",
    "claim_batch",
    "clear_stale_lease",
    "enqueue_unique",
    "find_expired",
    "find_foreign_expired",
    "foreign_lease_expired",
    "insert_job",
    "insert_many",
    "lease_of_claim",
    "new_token",
    "next_due",
    "owned_filter",
    "owned_filter_many",
    "rank_missing_priority",
    "recover",
    "recovery_guard",
    "release",
    "renew_leases",
    "to_millis",
    "transition",
    "upsert_named_schedule",
    "upsert_schedule",
]

CLAIM_SORT = [("priority", -1), ("nextRunAt", 1)]
# Cleared whenever a job stops being held by a worker, with the cancel request that run had.
LEASE_FIELDS = {
    "lockedAt": "",
    "claimedBy": "",
    "claimToken": "",
    "lastHeartbeat": "",
    "lockExpiresAt": "",
    "cancelRequested": "",
}
# A job whose cancellation was requested is never claimed again.
_NOT_CANCELLED = {"$ne": True}


def new_token(owner: str) -> str:
    """A claim token: unique per claim, so a run is told apart from a later run of its job.

    It starts with the owner's id: a lease (``lockExpiresAt``) counts only for the claim that
    wrote it, and the TypeScript Monque re-claims jobs without clearing Python's lease fields.
    """
    return f"{owner}/{secrets.token_hex(8)}"


def lease_of_claim(doc: Mapping[str, Any]) -> bool:
    """Whether the document's ``lockExpiresAt`` was written by the claim it now holds.

    False when another implementation claimed the job over an earlier Python claim's lease
    (its ``claimedBy`` is not the token's owner): that lease says nothing about this claim.
    """
    token, owner = doc.get("claimToken"), doc.get("claimedBy")
    if not isinstance(token, str) or not isinstance(owner, str):
        return False
    # The random part never holds "/"; an owner id may: compare the whole owner part.
    return token.rpartition("/")[0] == owner


_TS_HEARTBEAT_MS = 30_000.0  # the TypeScript Monque's default heartbeatInterval


def heartbeat_silence(doc: Mapping[str, Any], lock_timeout: float, ts_shutdown: float) -> float:
    """How long a foreign holder's ``lastHeartbeat`` may be silent before its job counts as
    abandoned: ``max(lock_timeout, 3 * heartbeatInterval) + ts_shutdown``.

    ``ts_shutdown`` because a TypeScript worker stops heartbeating when its ``stop()`` begins
    and then waits up to its ``shutdownTimeout`` for running handlers. ``heartbeatInterval``
    is stored as TS was configured (a number, or a numeric string from an environment
    variable); anything else counts as TS's default, 30 s.
    """
    interval = doc.get("heartbeatInterval")
    try:
        millis = float(interval) if not isinstance(interval, bool) else _TS_HEARTBEAT_MS  # type: ignore[arg-type]
    except (TypeError, ValueError):
        millis = _TS_HEARTBEAT_MS
    if not millis > 0 or millis == float("inf"):
        millis = _TS_HEARTBEAT_MS
    return max(lock_timeout, 3 * millis / 1000) + ts_shutdown


def foreign_lease_expired(
    doc: Mapping[str, Any],
    now: datetime,
    lock_timeout: float,
    ts_lock_timeout: float,
    ts_shutdown: float = 0.0,
) -> bool:
    """Whether a job held without a Python lease (a TypeScript worker's) was abandoned.

    Judged by what the TypeScript Monque keeps fresh: ``lastHeartbeat`` silent for longer than
    ``heartbeat_silence``; without one, ``lockedAt`` (the claim) older than
    ``ts_lock_timeout``, TS's own rule.
    """
    heartbeat, locked = _aware(doc.get("lastHeartbeat")), _aware(doc.get("lockedAt"))
    if heartbeat is not None:
        silence = heartbeat_silence(doc, lock_timeout, ts_shutdown)
        return heartbeat < now - timedelta(seconds=silence)
    if locked is not None:
        return locked < now - timedelta(seconds=ts_lock_timeout)
    return True  # held by nobody that could ever renew it


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


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
        if stored is None:
            # An upsert racing another one can come back empty on some servers: read what
            # the winner stored, or try again.
            stored = yield Call("find_one", (key,))
            if stored is None:
                continue
        return stored, stored["_id"] == doc["_id"]
    raise RuntimeError(f"schedule of {doc['name']!r} did not settle")  # pragma: no cover


def upsert_named_schedule(
    doc: dict[str, Any], superseded: dict[str, Any]
) -> Operation[tuple[dict[str, Any], bool]]:
    """``upsert_schedule`` for a schedule given no key (its key is ``schedule:<name>``): one
    schedule per name, whichever implementation created it.

    The TypeScript Monque stores a schedule without ``uniqueKey`` (a new one at every
    ``schedule()`` call). The oldest such active recurring job of the name is adopted (given
    the key) unless a keyed one exists, then updated like any other; every other key-less one
    that is pending would run each slot again, and gets ``superseded`` (a cancellation). One
    running now is left to finish, and superseded by the next call.
    """
    name, key, now = doc["name"], doc["uniqueKey"], doc["updatedAt"]
    keyless = {
        "name": name,
        "uniqueKey": {"$exists": False},
        "repeatInterval": {"$type": "string"},
    }
    found = yield Call(
        "find_one", ({**keyless, "status": {"$in": ACTIVE}},), {"sort": [("createdAt", 1)]}
    )
    if found is not None:
        mine = {"_id": found["_id"], "uniqueKey": {"$exists": False}}
        # A keyed schedule of the name exists already: nothing to adopt.
        with contextlib.suppress(DuplicateKeyError):
            yield Call("update_one", (mine, {"$set": {"uniqueKey": key, "updatedAt": now}}))
        yield Call("update_many", ({**keyless, "status": JobStatus.PENDING.value}, superseded))
    return (yield from upsert_schedule(doc))


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
        "cancelRequested": _NOT_CANCELLED,
    }


def _claim_fields(owner: str, now: datetime, lock_timeout: float, token: str) -> dict[str, Any]:
    return {
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
        "claimToken": token,
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
    names: Sequence[str], owner: str, now: datetime, lock_timeout: float, token: str | None = None
) -> Operation[dict[str, Any] | None]:
    """Atomically take the most urgent due job among ``names``."""
    fields = _claim_fields(owner, now, lock_timeout, token or new_token(owner))
    doc: dict[str, Any] | None = yield Call(
        "find_one_and_update",
        (_due(names, now), {"$set": fields}),
        {"sort": CLAIM_SORT, "return_document": ReturnDocument.AFTER},
    )
    return doc


def claim_batch(
    slots: Mapping[str, int],
    limit: int,
    owner: str,
    now: datetime,
    lock_timeout: float,
    token: str | None = None,
) -> Operation[tuple[list[dict[str, Any]], bool]]:
    """Take up to ``slots[name]`` due jobs of each name, ``limit`` in all, most urgent first.

    Returns the claimed jobs and whether the due jobs ran out (no need to claim again).

    One free slot: a single ``find_one_and_update``. More: read the most urgent due jobs, then
    claim exactly those with one ``update_many`` guarded per document on ``updatedAt`` (so a
    job changed or taken in between is skipped, never run from a stale read) and on
    ``status``/``nextRunAt``. Only jobs the update really took are returned; none is started
    before that write is acknowledged. Every job of one call gets the same fresh claim token.
    """
    token = token or new_token(owner)
    names = [name for name, free in slots.items() if free > 0]
    wanted = sum(slots[name] for name in names)
    if wanted == 0 or limit < 1:
        return [], False
    if wanted == 1 or limit == 1:
        doc = yield from claim(names, owner, now, lock_timeout, token)
        return ([], True) if doc is None else ([doc], False)
    now = to_millis(now)
    candidates: list[dict[str, Any]] = yield Call(
        "find", (_due(names, now),), {"sort": CLAIM_SORT, "limit": wanted}
    )
    left = {name: slots[name] for name in names}
    chosen: list[dict[str, Any]] = []
    for doc in candidates:
        if len(chosen) < limit and left.get(doc.get("name"), 0) > 0:  # type: ignore[arg-type]
            left[doc["name"]] -= 1
            chosen.append(doc)
    # Ran out: every due job of these names was read, and none was left for want of a slot.
    exhausted = len(candidates) < wanted and len(chosen) == len(candidates)
    if not chosen:
        return [], exhausted
    fields = _claim_fields(owner, now, lock_timeout, token)
    guard = {
        "$or": [{"_id": doc["_id"], "updatedAt": doc.get("updatedAt")} for doc in chosen],
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$lte": now},
        "cancelRequested": _NOT_CANCELLED,
    }
    ids = [doc["_id"] for doc in chosen]
    batch = {
        "_id": {"$in": ids},
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
        "claimToken": token,
    }
    try:
        result = yield Call("update_many", (guard, {"$set": fields}))
    except PyMongoError:
        # Unknown outcome: hand back whatever this batch may hold, then report the error.
        with contextlib.suppress(PyMongoError):
            yield from _hand_back(batch, now)
        raise
    if result.modified_count != len(chosen):
        held: list[dict[str, Any]] = yield Call("find", (batch,), {"projection": {"_id": 1}})
        taken = {doc["_id"] for doc in held}
        chosen = [doc for doc in chosen if doc["_id"] in taken]
        exhausted = False  # a skipped job may have changed and still be due: read again
    return [{**doc, **fields} for doc in chosen], exhausted


def cancel_requested_pending(update: dict[str, Any]) -> Operation[int]:
    """Apply ``update`` (a cancellation) to pending jobs that carry a cancel request: the
    TypeScript Monque ignores the request of a run it holds, and leaves it on the job when it
    reschedules or retries it, where no Python worker would ever claim it (served by
    ``monque_cancel_requests``)."""
    flt = {"cancelRequested": True, "status": JobStatus.PENDING.value}
    result = yield Call("update_many", (flt, update))
    return int(result.modified_count)


def rank_missing_priority(names: Sequence[str]) -> Operation[int]:
    """Give pending jobs stored without ``priority`` (the TypeScript Monque writes none) the
    default 0, so they rank as 0 and not below negative priorities (served by monque_claim:
    a missing field is its null key)."""
    if not names:
        return 0
    flt = {
        "name": names[0] if len(names) == 1 else {"$in": list(names)},
        "status": JobStatus.PENDING.value,
        "priority": None,
    }
    # A read first: almost always there is none, and a read costs no write.
    found = yield Call("find_one", (flt,), {"projection": {"_id": 1}})
    if found is None:
        return 0
    result = yield Call("update_many", (flt, {"$set": {"priority": 0}}))
    return int(result.modified_count)


def next_due(names: Sequence[str]) -> Operation[datetime | None]:
    """When the earliest pending job among ``names`` is due (served by ``monque_next_due``)."""
    flt = {
        "name": names[0] if len(names) == 1 else {"$in": list(names)},
        "status": JobStatus.PENDING.value,
        "nextRunAt": {"$type": "date"},  # a malformed document must not hide the rest
        "cancelRequested": _NOT_CANCELLED,  # never claimed: must not keep waking the claimer
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


def owned_filter(job_id: ObjectId, owner: str, token: str | None) -> dict[str, Any]:
    """The job as held by one run: this owner's claim with this token (None: a claim written
    before tokens existed)."""
    return {
        "_id": job_id,
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
        "claimToken": token,
    }


def owned_filter_many(held: Sequence[tuple[ObjectId, str | None]], owner: str) -> dict[str, Any]:
    return {
        "$or": [{"_id": job_id, "claimToken": token} for job_id, token in held],
        "status": JobStatus.PROCESSING.value,
        "claimedBy": owner,
    }


def transition(
    job_id: ObjectId, owner: str, token: str | None, update: dict[str, Any]
) -> Operation[bool]:
    """Apply an update guarded by one run's claim; False if that run no longer holds the job."""
    result = yield Call("update_one", (owned_filter(job_id, owner, token), update))
    return bool(result.matched_count)


APPLIED, LOST, CANCEL = "applied", "lost", "cancel"


class OutcomeWrite(NamedTuple):
    """One run's outcome: the update, guarded by the run's claim. With ``cancel_wins`` a
    pending cancel request stops it (the answer is then ``CANCEL``: write the cancellation)."""

    job_id: ObjectId
    token: str | None
    update: dict[str, Any]
    cancel_wins: bool = True


def _outcome_filter(item: OutcomeWrite, owner: str) -> dict[str, Any]:
    flt = owned_filter(item.job_id, owner, item.token)
    if item.cancel_wins:
        flt["cancelRequested"] = _NOT_CANCELLED
    return flt


def apply_transitions(items: Sequence[OutcomeWrite], owner: str) -> Operation[list[str]]:
    """Apply several runs' outcomes in one unordered ``bulk_write`` (one ``update_one`` for one).

    Returns per item ``APPLIED``, ``LOST`` (the run no longer holds the job) or ``CANCEL`` (it
    holds it, but a cancellation was requested meanwhile). When fewer matched than were sent,
    one read settles which: an applied update left its own ``status`` and ``updatedAt`` (each
    update sets both) on the document; a held one still has the run's token.
    """
    if len(items) == 1:
        result = yield Call("update_one", (_outcome_filter(items[0], owner), items[0].update))
        if result.matched_count:
            return [APPLIED]
    else:
        requests = [UpdateOne(_outcome_filter(item, owner), item.update) for item in items]
        result = yield Call("bulk_write", (requests,), {"ordered": False})
        if result.matched_count == len(items):
            return [APPLIED] * len(items)
    docs: list[dict[str, Any]] = yield Call(
        "find",
        ({"_id": {"$in": [item.job_id for item in items]}},),
        {
            "projection": {
                "status": 1,
                "updatedAt": 1,
                "claimedBy": 1,
                "claimToken": 1,
                "cancelRequested": 1,
            }
        },
    )
    found = {doc["_id"]: doc for doc in docs}
    return [_settled(found.get(item.job_id), item, owner) for item in items]


def _settled(doc: dict[str, Any] | None, item: OutcomeWrite, owner: str) -> str:
    if doc is None:
        return LOST
    if _left_by(doc, item.update):
        return APPLIED
    held = (
        doc.get("status") == JobStatus.PROCESSING.value
        and doc.get("claimedBy") == owner
        and doc.get("claimToken") == item.token
    )
    return CANCEL if held and doc.get("cancelRequested") is True else LOST


def _left_by(doc: dict[str, Any], update: dict[str, Any]) -> bool:
    fields = update.get("$set", {})
    if doc.get("status") != fields.get("status"):
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
    held: Sequence[tuple[ObjectId, str | None]], owner: str, now: datetime, lock_timeout: float
) -> Operation[list[tuple[ObjectId, str | None]]]:
    """Extend the leases of the runs this owner holds; returns the runs whose claim is gone.

    ``lockedAt`` and ``lastHeartbeat`` move too: the TypeScript Monque judges a job stale by
    ``lockedAt`` age, and must never take a live Python run for an abandoned one.
    """
    flt = owned_filter_many(held, owner)
    update = {
        "$set": {
            "lockedAt": now,
            "lastHeartbeat": now,
            "lockExpiresAt": now + timedelta(seconds=lock_timeout),
        }
    }
    result = yield Call("update_many", (flt, update))
    if result.matched_count == len(held):
        return []
    still: list[dict[str, Any]] = yield Call(
        "find", (flt,), {"projection": {"_id": 1, "claimToken": 1}}
    )
    current = {(doc["_id"], doc.get("claimToken")) for doc in still}
    return [run for run in held if run not in current]


def cancel_requests(held: Sequence[tuple[ObjectId, str | None]]) -> Operation[list[ObjectId]]:
    """Which of these runs' jobs have a cancellation request (one indexed read by ``_id``)."""
    docs: list[dict[str, Any]] = yield Call(
        "find",
        (
            {
                "_id": {"$in": [job_id for job_id, _ in held]},
                "cancelRequested": True,
            },
        ),
        {"projection": {"_id": 1, "claimToken": 1}},
    )
    wanted = set(held)
    return [doc["_id"] for doc in docs if (doc["_id"], doc.get("claimToken")) in wanted]


def find_expired(now: datetime, limit: int) -> Operation[list[dict[str, Any]]]:
    """Expired leases, longest expired first (served by ``monque_leases``). A lease another
    implementation's claim left behind is among them: check ``lease_of_claim``."""
    flt = {"status": JobStatus.PROCESSING.value, "lockExpiresAt": {"$lt": now}}
    docs: list[dict[str, Any]] = yield Call(
        "find", (flt,), {"sort": [("lockExpiresAt", 1)], "limit": limit}
    )
    return docs


def find_foreign_expired(
    now: datetime, lock_timeout: float, ts_lock_timeout: float, limit: int, ts_shutdown: float = 0
) -> Operation[list[dict[str, Any]]]:
    """Jobs held without a Python lease that may be abandoned (a superset: check each with
    ``foreign_lease_expired``). Served by ``monque_leases``: a missing ``lockExpiresAt`` is
    its null key, and the index holds processing jobs only."""
    flt = {
        "status": JobStatus.PROCESSING.value,
        "lockExpiresAt": None,
        "$or": [
            {"lastHeartbeat": {"$lt": now - timedelta(seconds=lock_timeout + ts_shutdown)}},
            {"lastHeartbeat": None, "lockedAt": {"$lt": now - timedelta(seconds=ts_lock_timeout)}},
            {"lastHeartbeat": None, "lockedAt": None},
        ],
    }
    # Longest silent first (no heartbeat at all sorts first): if those are not yet
    # abandoned, no later one is.
    docs: list[dict[str, Any]] = yield Call(
        "find", (flt,), {"sort": [("lastHeartbeat", 1)], "limit": limit}
    )
    return docs


def _same(doc: Mapping[str, Any], field: str) -> Any:
    # Matches the field exactly as read, a missing one included.
    return doc.get(field, {"$exists": False})


def clear_stale_lease(doc: Mapping[str, Any]) -> Operation[bool]:
    """Remove the lease and token an earlier Python claim left on a job another
    implementation has claimed since (unless anything of that changed meanwhile)."""
    flt = {
        "_id": doc["_id"],
        "status": JobStatus.PROCESSING.value,
        "claimedBy": _same(doc, "claimedBy"),
        "claimToken": _same(doc, "claimToken"),
        "lockExpiresAt": _same(doc, "lockExpiresAt"),
    }
    result = yield Call("update_one", (flt, {"$unset": {"claimToken": "", "lockExpiresAt": ""}}))
    return bool(result.modified_count)


def recovery_guard(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The filter under which a recovery of ``doc`` applies: the same claim, not renewed.

    A Python claim: its owner and token, lease still expired. Any other claim: the owner and
    the heartbeat and lock times exactly as read, and still no Python lease.
    """
    flt: dict[str, Any] = {"_id": doc["_id"], "status": JobStatus.PROCESSING.value}
    if "lockExpiresAt" in doc and lease_of_claim(doc):
        flt.update(
            claimedBy=doc.get("claimedBy"),
            claimToken=doc.get("claimToken"),
            lockExpiresAt={"$lt": now},
        )
    else:
        flt.update(
            claimedBy=_same(doc, "claimedBy"),
            lastHeartbeat=_same(doc, "lastHeartbeat"),
            lockedAt=_same(doc, "lockedAt"),
            lockExpiresAt=None,  # missing or null: what find_foreign_expired reads
        )
    return flt


def _release_update(now: datetime) -> dict[str, Any]:
    # nextRunAt stays: a claimed job was due, so it keeps its place at the head of the queue.
    return {"$set": {"status": JobStatus.PENDING.value, "updatedAt": now}, "$unset": LEASE_FIELDS}


def _hand_back(flt: dict[str, Any], now: datetime) -> Operation[int]:
    # A job whose cancellation was requested meanwhile is cancelled, never handed back.
    cancelled = yield Call(
        "update_many",
        (
            {**flt, "cancelRequested": True},
            {
                "$set": {
                    "status": JobStatus.CANCELLED.value,
                    "cancelledAt": now,
                    "updatedAt": now,
                },
                "$unset": LEASE_FIELDS,
            },
        ),
    )
    result = yield Call("update_many", (flt, _release_update(now)))
    return int(result.modified_count) + int(cancelled.modified_count)


def release(
    held: Sequence[tuple[ObjectId, str | None]], owner: str, now: datetime
) -> Operation[int]:
    """Hand running jobs back to pending (shutdown): no attempt is counted. A job whose
    cancellation was requested is cancelled instead."""
    return (yield from _hand_back(owned_filter_many(held, owner), now))


def recover(doc: Mapping[str, Any], now: datetime, update: dict[str, Any]) -> Operation[bool]:
    """Apply ``update`` to an abandoned job, unless its claim was renewed meanwhile or the job
    was claimed again (see ``recovery_guard``)."""
    result = yield Call("update_one", (recovery_guard(doc, now), update))
    return bool(result.modified_count)
