"""Plain renderings shared by the CLI and the dashboard: ISO-8601 times and readable JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId

__all__ = ["dumps", "iso"]


def iso(value: datetime) -> str:
    """Aware ISO-8601 in UTC, millisecond precision (BSON's)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)  # Decimal128, UUID, Regex, ...: their readable form


def dumps(value: object, *, indent: int | None = 2) -> str:
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)
