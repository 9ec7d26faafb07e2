"""Cron expressions: 5 fields or an ``@daily``-style alias, evaluated in an IANA timezone."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from monque.errors import InvalidCronError, InvalidScheduleError

__all__ = ["ALIASES", "check_cron", "get_zone", "next_run"]

ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def check_cron(expression: object) -> str:
    """Return the normalized expression or raise ``InvalidCronError``."""
    if not isinstance(expression, str):
        raise InvalidCronError(f"cron expression must be a string, not {type(expression).__name__}")
    normalized = " ".join(expression.split())
    if normalized.startswith("@"):
        if normalized.lower() not in ALIASES:
            raise InvalidCronError(
                f"unknown cron alias {expression!r}; use one of {', '.join(sorted(ALIASES))}"
            )
        return normalized.lower()
    if len(normalized.split(" ")) != 5 or not croniter.is_valid(normalized):
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week) or an alias such as @daily"
        )
    return normalized


@lru_cache(maxsize=256)
def get_zone(name: str | None) -> ZoneInfo | timezone:
    """The timezone for an IANA name (None or 'UTC': UTC)."""
    if name is None or name == "UTC":
        return timezone.utc
    if not isinstance(name, str) or not name:
        raise InvalidScheduleError(f"timezone must be an IANA name string, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(f"unknown timezone {name!r}") from exc


def next_run(expression: str, after: datetime, tz: str | None = None) -> datetime:
    """The first time strictly after ``after`` that matches, evaluated in ``tz``, in UTC.

    Local wall-clock times are what the cron fields mean, so a ``0 9 * * *`` job in
    Europe/Berlin runs at 08:00 UTC in winter and 07:00 UTC in summer.
    """
    local = after.astimezone(get_zone(tz))
    nxt: datetime = croniter(expression, local).get_next(datetime)
    return nxt.astimezone(timezone.utc)
