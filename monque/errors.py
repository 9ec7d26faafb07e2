"""The typed error hierarchy: every error Monque raises is a ``MonqueError``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConnectionError",
    "HandlerCancelledError",
    "IndexConflictError",
    "InstanceIdConflictError",
    "InvalidCronError",
    "InvalidJobDocumentError",
    "InvalidJobNameError",
    "InvalidOptionError",
    "InvalidPayloadError",
    "InvalidScheduleError",
    "InvalidUniqueKeyError",
    "JobCancelledError",
    "JobLostError",
    "JobNotFoundError",
    "JobStateError",
    "JobTimeoutError",
    "MonqueError",
    "OutcomeNotStoredError",
    "PayloadTooLargeError",
    "PermanentError",
    "ShutdownStalledError",
    "ShutdownTimeoutError",
    "UniqueKeyConflictError",
    "UnknownJobError",
    "WorkerRegistrationError",
    "brief",
]


_TOPOLOGY = re.compile(r",? Topology Description: .*$", re.S)
_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")


def brief(exc: BaseException) -> str:
    """An error's message in one line: a driver error without its topology description
    (which spans screens during an outage) or its timeout settings."""
    text = _TIMEOUTS.sub("", _TOPOLOGY.sub("", str(exc)))
    return " ".join(text.split()) or type(exc).__name__


class MonqueError(Exception):
    """Base class of every error Monque raises."""


class InvalidOptionError(MonqueError, TypeError, ValueError):
    """A constructor or call option has the wrong type or is out of range."""


class InvalidJobNameError(MonqueError, ValueError):
    """A job name is not a non-empty, trimmed string of bounded length."""


class InvalidUniqueKeyError(MonqueError, TypeError, ValueError):
    """A unique key is not a plain, bounded string (operator dicts are refused)."""


class InvalidPayloadError(MonqueError, TypeError, ValueError):
    """A job's data cannot be encoded as BSON."""


class PayloadTooLargeError(InvalidPayloadError):
    """A job's data exceeds ``max_payload_size`` or MongoDB's 16 MiB document limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"job data is {size} bytes as BSON; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class InvalidScheduleError(MonqueError, ValueError):
    """A run time, delay, timezone or priority is invalid."""


class InvalidCronError(InvalidScheduleError):
    """A cron expression cannot be parsed (5 fields or an ``@daily``-style alias)."""


class WorkerRegistrationError(MonqueError):
    """A worker was registered twice, or with something that is not a handler."""


class UnknownJobError(MonqueError, LookupError):
    """A job name has no registered worker."""


class InvalidJobDocumentError(MonqueError):
    """A stored document is not a valid job (written by hand, or corrupted)."""

    def __init__(self, message: str, document_id: Any = None) -> None:
        super().__init__(message)
        self.document_id = document_id


class ConnectionError(MonqueError):
    """MongoDB could not be reached or refused an operation; wraps the driver error."""


class InstanceIdConflictError(MonqueError):
    """Another live instance already runs with this ``instance_id``."""


class JobLostError(MonqueError):
    """This instance no longer holds a job's lease (it expired, or the job was taken back)."""


class ShutdownTimeoutError(MonqueError):
    """``stop()`` timed out; the jobs still running were handed back to ``pending``."""

    def __init__(self, timeout: float, job_ids: Sequence[Any], *, forced: bool = False) -> None:
        when = "at a forced stop" if forced else f"after {timeout:g}s"
        super().__init__(f"{len(job_ids)} job(s) still running {when} were handed back to pending")
        self.timeout = timeout
        self.job_ids = list(job_ids)
        self.forced = forced


class ShutdownStalledError(MonqueError):
    """Part of the worker (a loop, a write, a job) did not end within ``stop()``'s bound; it
    was cancelled and left behind rather than waited on."""


class IndexConflictError(MonqueError):
    """An index Monque needs cannot be created: an existing index has its name or its key
    with other options. The message names both and the way out."""

    def __init__(self, message: str, wanted: str, existing: str | None) -> None:
        super().__init__(message)
        self.wanted = wanted
        self.existing = existing


class JobNotFoundError(MonqueError, LookupError):
    """No job has this id."""

    def __init__(self, message: str, job_id: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobStateError(MonqueError):
    """An action does not apply to a job in its current status (e.g. retrying a pending job)."""

    def __init__(self, message: str, job_id: Any, status: str | None, action: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.action = action


class UniqueKeyConflictError(JobStateError):
    """A retry would duplicate a unique key that another active job now holds."""

    def __init__(self, message: str, job_id: Any, holder_id: Any) -> None:
        super().__init__(message, job_id, None, "retry")
        self.holder_id = holder_id


class PermanentError(MonqueError):
    """Raise from a handler to fail the job at once, without retries."""


class JobTimeoutError(MonqueError):
    """A handler ran past its worker's ``timeout``; the run counts as a failure."""


class HandlerCancelledError(MonqueError):
    """An async handler raised ``CancelledError`` that Monque did not cause (a cancelled
    library future, a task scope): the run counts as a failure, like any other error."""


class OutcomeNotStoredError(MonqueError):
    """A run's outcome could not be written at all (not a connection problem); a minimal
    failure was recorded instead, or the lease left to expire."""


class JobCancelledError(MonqueError):
    """The job was cancelled while it ran (``cancel_job`` on a processing job)."""
