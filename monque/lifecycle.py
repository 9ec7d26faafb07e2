"""What a job document becomes: on creation, completion, failure and lost leases."""

from __future__ import annotations

import random
import traceback as _traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from monque.backoff import retry_delay
from monque.cron import next_run
from monque.job import Job, JobStatus
from monque.policy import RetryPolicy
from monque.storage.jobs import LEASE_FIELDS

__all__ = [
    "Outcome",
    "cancelled_update",
    "completion_update",
    "describe_error",
    "expiry",
    "failure_update",
    "new_document",
    "parked_update",
    "storable_text",
]

Retention = Mapping[str, float] | None


def expiry(status: str, now: datetime, retention: Retention) -> dict[str, Any]:
    """``expireAt`` for a finished status when retention is configured for it."""
    if retention and status in retention:
        return {"expireAt": now + timedelta(seconds=retention[status])}
    return {}


_MAX_TRACEBACK = 8_000
_MAX_REASON = 16_000


def storable_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` as BSON can store it: invalid text (lone surrogates, as ``os.fsdecode`` makes)
    escaped, and at most ``limit`` characters (the head, or with ``keep_end`` the tail)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_end:
        return f"[{cut} characters cut]\n" + text[-limit:]
    return text[:limit] + f" [{cut} characters cut]"


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(failure reason, traceback) of a handler's error, always storable, even when the error's
    own ``__str__`` raises."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = "<the error's message could not be read>"
    try:
        trace = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        trace = f"{name}: <the traceback could not be formatted>"
    reason = f"{name}: {message}" if message else name
    return (
        storable_text(reason, _MAX_REASON),
        storable_text(trace, _MAX_TRACEBACK, keep_end=True),
    )


def new_document(
    name: str,
    data: Any,
    *,
    now: datetime,
    run_at: datetime,
    unique_key: str | None = None,
    priority: int = 0,
    repeat_interval: str | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "name": name,
        "data": data,
        "status": JobStatus.PENDING.value,
        "nextRunAt": run_at,
        "priority": priority,
        "failCount": 0,
        "createdAt": now,
        "updatedAt": now,
    }
    if unique_key is not None:
        doc["uniqueKey"] = unique_key
    if repeat_interval is not None:
        doc["repeatInterval"] = repeat_interval
        doc["timezone"] = timezone
    return doc


@dataclass(frozen=True)
class Outcome:
    """An owner-guarded update to apply, and what it means for events."""

    update: dict[str, Any]
    will_retry: bool
    next_run_at: datetime | None


def completion_update(job: Job[Any], now: datetime, retention: Retention = None) -> Outcome:
    """Success: done for a one-off job; the next cron slot (fresh attempts) for a recurring one."""
    if job.repeat_interval is not None:
        upcoming = next_run(job.repeat_interval, now, job.timezone)
        return Outcome(
            {
                "$set": {
                    "status": JobStatus.PENDING.value,
                    "nextRunAt": upcoming,
                    "failCount": 0,
                    "completedAt": now,
                    "updatedAt": now,
                },
                "$unset": LEASE_FIELDS,
            },
            will_retry=False,
            next_run_at=upcoming,
        )
    return Outcome(
        {
            "$set": {
                "status": JobStatus.COMPLETED.value,
                "completedAt": now,
                "updatedAt": now,
                **expiry(JobStatus.COMPLETED.value, now, retention),
            },
            "$unset": LEASE_FIELDS,
        },
        will_retry=False,
        next_run_at=None,
    )


def failure_update(
    job: Job[Any],
    now: datetime,
    reason: str,
    policy: RetryPolicy,
    *,
    traceback: str | None = None,
    rng: random.Random | None = None,
    immediate: bool = False,
    permanent: bool = False,
    retention: Retention = None,
) -> Outcome:
    """A failed attempt: retry after ``2**failCount * backoff_base`` or give up.

    A recurring job that runs out of attempts is not lost: it records the failure and waits
    for its next cron slot with a fresh attempt budget. A retry of a recurring job never runs
    later than its next slot. ``immediate`` (a lost worker, not a failing handler) counts the
    attempt but keeps the job due at its old time, so it keeps its place in the queue.
    ``permanent`` (a non-retryable error) skips the remaining attempts.
    """
    fail_count = job.fail_count + 1
    fields: dict[str, Any] = {
        "failReason": storable_text(reason, _MAX_REASON),
        "updatedAt": now,
        "failedAt": now,
    }
    if traceback is not None:
        fields["failTraceback"] = storable_text(traceback, _MAX_TRACEBACK, keep_end=True)
    upcoming = (
        next_run(job.repeat_interval, now, job.timezone)
        if job.repeat_interval is not None
        else None
    )
    if fail_count < policy.max_retries and not permanent:
        delay = retry_delay(
            fail_count, policy.backoff_base, policy.max_backoff, policy.backoff_jitter, rng
        )
        retry_at = job.next_run_at if immediate else now + timedelta(seconds=delay)
        if upcoming is not None and upcoming < retry_at:
            retry_at = upcoming
        fields |= {
            "status": JobStatus.PENDING.value,
            "nextRunAt": retry_at,
            "failCount": fail_count,
        }
        return Outcome({"$set": fields, "$unset": LEASE_FIELDS}, True, retry_at)
    if upcoming is not None:
        fields |= {"status": JobStatus.PENDING.value, "nextRunAt": upcoming, "failCount": 0}
        return Outcome({"$set": fields, "$unset": LEASE_FIELDS}, False, upcoming)
    fields |= {
        "status": JobStatus.FAILED.value,
        "failCount": fail_count,
        **expiry(JobStatus.FAILED.value, now, retention),
    }
    return Outcome({"$set": fields, "$unset": LEASE_FIELDS}, False, None)


def cancelled_update(now: datetime, retention: Retention = None) -> Outcome:
    """A cancelled job: final (a recurring job's schedule stops until it is retried)."""
    return Outcome(
        {
            "$set": {
                "status": JobStatus.CANCELLED.value,
                "cancelledAt": now,
                "updatedAt": now,
                **expiry(JobStatus.CANCELLED.value, now, retention),
            },
            "$unset": LEASE_FIELDS,
        },
        will_retry=False,
        next_run_at=None,
    )


def parked_update(now: datetime, reason: str, retention: Retention = None) -> Outcome:
    """A job whose own document cannot be evaluated (a cron or timezone this host cannot read,
    a field of the wrong type): failed for good, with the reason, so it is reported once and
    never blocks the loops that meet it."""
    return Outcome(
        {
            "$set": {
                "status": JobStatus.FAILED.value,
                "failReason": storable_text(reason, _MAX_REASON),
                "failedAt": now,
                "updatedAt": now,
                **expiry(JobStatus.FAILED.value, now, retention),
            },
            "$unset": LEASE_FIELDS,
        },
        will_retry=False,
        next_run_at=None,
    )
