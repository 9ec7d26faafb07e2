"""What a job document becomes: on creation, completion, failure and lost leases."""

from __future__ import annotations

import random
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

__all__ = ["Outcome", "completion_update", "expiry", "failure_update", "new_document"]

Retention = Mapping[str, float] | None


def expiry(status: str, now: datetime, retention: Retention) -> dict[str, Any]:
    """``expireAt`` for a finished status when retention is configured for it."""
    if retention and status in retention:
        return {"expireAt": now + timedelta(seconds=retention[status])}
    return {}


_MAX_TRACEBACK = 8_000


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
    fields: dict[str, Any] = {"failReason": reason, "updatedAt": now, "failedAt": now}
    if traceback is not None:
        fields["failTraceback"] = traceback[-_MAX_TRACEBACK:]
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
