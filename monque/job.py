"""The job model: ``JobStatus`` and the typed ``Job[T]`` view of a stored document."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, TypeVar

from bson import ObjectId

from monque.errors import InvalidJobDocumentError, InvalidOptionError, MonqueError

__all__ = ["Job", "JobStatus"]

T = TypeVar("T")


class JobStatus(str, Enum):
    """Job states, stored as these strings (shared with the TypeScript Monque)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


def utc(value: datetime) -> datetime:
    """A datetime in UTC; naive values (pymongo's default decoding) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    # BSON dates keep milliseconds: truncate so values compare equal after a round trip.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Job(Generic[T]):
    """A job as stored in MongoDB, with snake_case attributes.

    ``created`` is not stored: it tells the caller of ``enqueue``/``schedule`` whether that call
    inserted a new document (False when an existing job with the same unique key was returned).
    """

    id: ObjectId
    name: str
    data: T
    status: JobStatus
    next_run_at: datetime
    fail_count: int = 0
    fail_reason: str | None = None
    repeat_interval: str | None = None
    unique_key: str | None = None
    timezone: str | None = None
    priority: int = 0
    locked_at: datetime | None = None
    claimed_by: str | None = None
    last_heartbeat: datetime | None = None
    lock_expires_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created: bool = field(default=False, compare=False)
    progress: dict[str, Any] | None = None
    fail_traceback: str | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    trace_context: dict[str, Any] | None = field(default=None, repr=False)
    _stop_flag: threading.Event = field(
        default_factory=threading.Event, init=False, repr=False, compare=False
    )
    _reporter: Any = field(default=None, init=False, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _attach(self, reporter: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._reporter, self._loop = reporter, loop

    def _detach(self) -> None:
        self._reporter = self._loop = None

    async def report_progress(self, value: float, message: str | None = None) -> None:
        """Store progress (0-100 and an optional message) and emit ``job:progress``.

        Only from the running handler; a sync handler calls ``report_progress_sync``.
        """
        reporter = self._checked_reporter(value, message)
        await reporter(self, float(value), message)

    def report_progress_sync(self, value: float, message: str | None = None) -> None:
        """``report_progress`` from a sync handler's thread."""
        reporter = self._checked_reporter(value, message)
        loop = self._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(reporter(self, float(value), message), loop).result(30)

    def _checked_reporter(self, value: object, message: object) -> Any:
        if self._reporter is None:
            raise MonqueError("progress can only be reported by the handler running this job")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise InvalidOptionError(f"progress must be a number from 0 to 100, got {value!r}")
        if message is not None and not isinstance(message, str):
            raise InvalidOptionError("progress message must be a string")
        return self._reporter

    @property
    def is_recurring(self) -> bool:
        return self.repeat_interval is not None

    @property
    def should_stop(self) -> bool:
        """True once this worker lost the job (lease gone, shutdown timeout, cancellation).

        Async handlers are cancelled instead; sync handlers, which cannot be interrupted, should
        check this flag in long loops and return early. Their result is discarded anyway.
        """
        return self._stop_flag.is_set()

    @classmethod
    def from_document(cls, doc: dict[str, Any], *, created: bool = False) -> Job[Any]:
        """Convert a stored document, raising ``InvalidJobDocumentError`` on bad fields."""
        doc_id = doc.get("_id")
        try:
            status = JobStatus(doc.get("status"))
        except ValueError:
            raise InvalidJobDocumentError(
                f"job {doc_id!r} has an invalid status {doc.get('status')!r}", doc_id
            ) from None
        return Job(
            id=_typed(doc, "_id", ObjectId, required=True),
            name=_typed(doc, "name", str, required=True),
            data=doc.get("data"),
            status=status,
            next_run_at=utc(_typed(doc, "nextRunAt", datetime, required=True)),
            fail_count=_typed(doc, "failCount", int) or 0,
            fail_reason=_typed(doc, "failReason", str),
            repeat_interval=_typed(doc, "repeatInterval", str),
            unique_key=_typed(doc, "uniqueKey", str),
            timezone=_typed(doc, "timezone", str),
            priority=_typed(doc, "priority", int) or 0,
            locked_at=_date(doc, "lockedAt"),
            claimed_by=_typed(doc, "claimedBy", str),
            last_heartbeat=_date(doc, "lastHeartbeat"),
            lock_expires_at=_date(doc, "lockExpiresAt"),
            started_at=_date(doc, "startedAt"),
            completed_at=_date(doc, "completedAt"),
            created_at=_date(doc, "createdAt"),
            updated_at=_date(doc, "updatedAt"),
            progress=_typed(doc, "progress", dict),
            fail_traceback=_typed(doc, "failTraceback", str),
            failed_at=_date(doc, "failedAt"),
            cancelled_at=_date(doc, "cancelledAt"),
            # Never a reason to refuse a job: anything but a document is ignored.
            trace_context=doc["traceContext"]
            if isinstance(doc.get("traceContext"), dict)
            else None,
            created=created,
        )


def _typed(doc: dict[str, Any], key: str, kind: type[Any], *, required: bool = False) -> Any:
    value = doc.get(key)
    if value is None:
        if required:
            raise InvalidJobDocumentError(
                f"job {doc.get('_id')!r} has no {key!r} field", doc.get("_id")
            )
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidJobDocumentError(
            f"job {doc.get('_id')!r} field {key!r} should be {kind.__name__}, "
            f"not {type(value).__name__}",
            doc.get("_id"),
        )
    return value


def _date(doc: dict[str, Any], key: str) -> datetime | None:
    value = _typed(doc, key, datetime)
    return utc(value) if value is not None else None
