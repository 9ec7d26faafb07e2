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
    "js_length",
    "resolve_run_at",
]

# The TypeScript Monque's identifier rules (``validateJobName``/``validateUniqueKey``), so a
# name or key one side accepts is never one the other refuses. Lengths count UTF-16 code units,
# as JavaScript's ``String.length`` does.
MAX_NAME_LENGTH = 255
MAX_UNIQUE_KEY_LENGTH = 1024
MAX_PRIORITY = 1_000_000
# Room for the rest of the job document inside MongoDB's 16 MiB limit.
_DOCUMENT_OVERHEAD = 16 * 1024
# JavaScript's ``\s`` (what the TS pattern refuses in names) ...
_JS_WHITESPACE = frozenset(
    "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


def _is_control(ch: str) -> bool:
    # ... and Unicode category Cc (``\p{Cc}``): C0, DEL and C1.
    return ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F


def js_length(text: str) -> int:
    """``text.length`` in JavaScript: UTF-16 code units (a character beyond U+FFFF is 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: BSON cannot store it
        return False
    return True


def check_name(name: object) -> str:
    """A job name: 1 to 255 UTF-16 units, no whitespace, no control characters (the TS rules)."""
    if not isinstance(name, str):
        raise InvalidJobNameError(f"job name must be a string, not {type(name).__name__}")
    if not _encodable(name):
        raise InvalidJobNameError(f"job name is not valid Unicode text: {name!r}")
    if not name:
        raise InvalidJobNameError("job name must not be empty")
    if js_length(name) > MAX_NAME_LENGTH:
        raise InvalidJobNameError(
            f"job name is {js_length(name)} UTF-16 units long; at most {MAX_NAME_LENGTH}"
        )
    if any(ch in _JS_WHITESPACE or _is_control(ch) for ch in name):
        raise InvalidJobNameError(
            f"job name must not contain whitespace or control characters: {name!r}"
        )
    return name


def check_unique_key(key: object) -> str:
    """A unique key: 1 to 1024 UTF-16 units, not only whitespace, no control characters."""
    if not isinstance(key, str):
        raise InvalidUniqueKeyError(
            f"unique_key must be a string, not {type(key).__name__} (operator documents are "
            "never used in queries)"
        )
    if not _encodable(key):
        raise InvalidUniqueKeyError(f"unique_key is not valid Unicode text: {key!r}")
    # Blank as JavaScript's trim() sees it (it also strips U+FEFF).
    if all(ch in _JS_WHITESPACE or ch.isspace() for ch in key) or (
        js_length(key) > MAX_UNIQUE_KEY_LENGTH
    ):
        raise InvalidUniqueKeyError(
            f"unique_key must have 1 to {MAX_UNIQUE_KEY_LENGTH} characters and not be only "
            f"whitespace, got {js_length(key)}"
        )
    if any(_is_control(ch) for ch in key):
        raise InvalidUniqueKeyError(f"unique_key must not contain control characters: {key!r}")
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
