"""Call-site validation of names, keys, payloads and run times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import bson
from bson.errors import InvalidDocument

from monque.durations import to_seconds
from monque.errors import (
    InvalidJobNameError,
    InvalidOptionError,
    InvalidPayloadError,
    InvalidScheduleError,
    InvalidUniqueKeyError,
    PayloadTooLargeError,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_UNIQUE_KEY_LENGTH",
    "check_name",
    "check_payload",
    "check_priority",
    "check_unique_key",
    "resolve_run_at",
]

MAX_NAME_LENGTH = 200
MAX_UNIQUE_KEY_LENGTH = 512  # well under the 1 KiB-ish index key budget of older servers
MAX_PRIORITY = 1_000_000
# Room for the rest of the job document inside MongoDB's 16 MiB limit.
_DOCUMENT_OVERHEAD = 16 * 1024


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidJobNameError(f"job name must be a string, not {type(name).__name__}")
    if not name or name.strip() != name:
        raise InvalidJobNameError(
            f"job name must be non-empty with no leading or trailing whitespace: {name!r}"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidJobNameError(f"job name is {len(name)} characters; at most {MAX_NAME_LENGTH}")
    if any(ord(ch) < 32 for ch in name) or name.startswith("$"):
        raise InvalidJobNameError(f"job name has control characters or starts with '$': {name!r}")
    return name


def check_unique_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidUniqueKeyError(
            f"unique_key must be a string, not {type(key).__name__} (operator documents are "
            "never used in queries)"
        )
    if not key or len(key) > MAX_UNIQUE_KEY_LENGTH:
        raise InvalidUniqueKeyError(
            f"unique_key must have 1 to {MAX_UNIQUE_KEY_LENGTH} characters, got {len(key)}"
        )
    return key


def check_payload(data: Any, limit: int) -> None:
    """Raise unless ``data`` encodes as BSON within ``limit`` bytes."""
    try:
        size = len(bson.encode({"data": data}))
    except (InvalidDocument, TypeError, OverflowError, ValueError) as exc:
        raise InvalidPayloadError(f"job data is not BSON-encodable: {exc}") from exc
    effective = min(limit, 16 * 1024 * 1024 - _DOCUMENT_OVERHEAD)
    if size > effective:
        raise PayloadTooLargeError(size, effective)


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidOptionError(f"priority must be an int, not {type(priority).__name__}")
    if abs(priority) > MAX_PRIORITY:
        raise InvalidOptionError(f"priority must be within +-{MAX_PRIORITY}")
    return priority


def resolve_run_at(run_at: object, delay: object, now: datetime) -> datetime:
    """The first run time from ``run_at`` (timezone-aware) or ``delay`` (>= 0), else now."""
    if run_at is not None and delay is not None:
        raise InvalidScheduleError("pass run_at or delay, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidScheduleError(f"run_at must be a datetime, not {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidScheduleError(
                "run_at must be timezone-aware (e.g. datetime.now(timezone.utc)); naive "
                "datetimes are ambiguous"
            )
        return run_at.astimezone(timezone.utc)
    if delay is not None:
        try:
            seconds = to_seconds(delay, "delay", allow_zero=True)
        except InvalidOptionError as exc:
            raise InvalidScheduleError(str(exc)) from None
        return now + timedelta(seconds=seconds)
    return now
