"""One log line per job event, and a database outage told once with its end.

The library logs under ``monque`` (this module: ``monque.worker.jobs``, the outage:
``monque.worker.database``) and never configures logging; ``monque worker`` does. Records carry
``job_id``, ``job_name`` and, where it applies, ``duration`` as attributes (``extra``), so a
JSON formatter can emit them as fields.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from monque.errors import brief
from monque.job import Job

__all__ = ["Outage", "cancelled", "completed", "failed", "lost", "recovered", "started"]

log = logging.getLogger("monque.worker.jobs")
db_log = logging.getLogger("monque.worker.database")


def _extra(job: Job[Any], **more: Any) -> dict[str, Any]:
    return {"job_id": str(job.id), "job_name": job.name, **more}


def started(job: Job[Any]) -> None:
    attempt = job.fail_count + 1
    log.info(
        "%s %s started%s",
        job.name,
        job.id,
        f" (attempt {attempt})" if attempt > 1 else "",
        extra=_extra(job, attempt=attempt),
    )


def completed(job: Job[Any], seconds: float) -> None:
    log.info(
        "%s %s completed in %.3fs", job.name, job.id, seconds, extra=_extra(job, duration=seconds)
    )


def failed(
    job: Job[Any], error: BaseException, will_retry: bool, seconds: float | None = None
) -> None:
    """At WARNING with the traceback; says whether and when it runs again."""
    if will_retry:
        then = f"; retry at {_when(job.next_run_at)}"
    elif job.is_recurring:
        then = f"; next run at {_when(job.next_run_at)}"
    else:
        then = f"; failed for good after {job.fail_count} attempt(s)"
    log.warning(
        "%s %s failed: %s%s",
        job.name,
        job.id,
        f"{type(error).__name__}: {error}",
        then,
        exc_info=(type(error), error, error.__traceback__),
        extra=_extra(job, duration=seconds, will_retry=will_retry),
    )


def cancelled(job: Job[Any]) -> None:
    log.info("%s %s cancelled", job.name, job.id, extra=_extra(job))


def lost(job: Job[Any]) -> None:
    log.warning(
        "%s %s lost: this worker no longer holds it (lease expired or taken over); its result "
        "is not written",
        job.name,
        job.id,
        extra=_extra(job),
    )


def recovered(job: Job[Any], holder: str | None) -> None:
    log.warning(
        "%s %s recovered from %s, whose lease expired; it runs again",
        job.name,
        job.id,
        holder or "a worker that is gone",
        extra=_extra(job),
    )


def _when(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when is not None else "?"


class Outage:
    """Database trouble is logged once when it starts (WARNING, one line, no topology dump)
    and once when it ends (INFO, with its length); repeats in between at DEBUG. Kept per
    activity (claiming, heartbeat...): one that works does not end another's trouble."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def failed(self, what: str, exc: BaseException) -> None:
        if what not in self._since:
            self._since[what] = time.monotonic()
            db_log.warning("database trouble: %s failed: %s; retrying", what, brief(exc))
        else:
            db_log.debug("still failing: %s: %s", what, brief(exc))

    def ok(self, what: str) -> None:
        since = self._since.pop(what, None)
        if since is not None:
            db_log.info(
                "database reachable again: %s works after %.1fs", what, time.monotonic() - since
            )
