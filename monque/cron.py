"""Cron expressions in the dialect both Monques evaluate alike, in an IANA timezone.

Accepted: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds *first*
(cron-parser's order, which the TypeScript Monque uses), built from numbers, ``*``, ``,``, ``-``,
``/`` and English month and weekday names. Aliases (``@daily``, ``@midnight``...) are stored as
their 5-field form, since cron-parser does not know all of them. Extensions only one side reads
(``L``, ``W``, ``#``, ``?``, ``H``) are refused: the job would change meaning, or fail, whenever
the other side reschedules it.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from monque.errors import InvalidCronError, InvalidScheduleError

__all__ = ["ALIASES", "check_cron", "get_zone", "next_run"]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NUMERIC = re.compile(r"^[0-9*,/-]+$")
# Month and weekday names (JAN, mon...): allowed in the last two fields only.
_NAMES = re.compile(
    r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT", re.I
)
_HELP = (
    "expected 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, "
    "or an alias such as @daily; numbers, names, '*', ',', '-' and '/' only"
)


def check_cron(expression: object) -> str:
    """The expression as stored (aliases expanded, spaces normalized) or ``InvalidCronError``."""
    if not isinstance(expression, str):
        raise InvalidCronError(f"cron expression must be a string, not {type(expression).__name__}")
    normalized = " ".join(expression.split())
    if normalized.startswith("@"):
        alias = ALIASES.get(normalized.lower())
        if alias is None:
            raise InvalidCronError(
                f"unknown cron alias {expression!r}; use one of {', '.join(sorted(ALIASES))}"
            )
        return alias
    fields = normalized.split(" ")
    if len(fields) not in (5, 6):
        raise InvalidCronError(f"invalid cron expression {expression!r}: {_HELP}")
    # Names only where they mean something: the month and weekday (the last two) fields.
    plain, named = fields[:-2], fields[-2:]
    named = [_NAMES.sub("0", f) for f in named]
    if not all(_NUMERIC.match(f) for f in plain + named):
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: L, W, #, ? and H are not evaluated "
            f"the same by the TypeScript Monque; {_HELP}"
        )
    if not croniter.is_valid(normalized, second_at_beginning=len(fields) == 6):
        raise InvalidCronError(f"invalid cron expression {expression!r}: {_HELP}")
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
    Europe/Berlin runs at 08:00 UTC in winter and 07:00 UTC in summer. Six fields read seconds
    first; an alias stored by an earlier version is read as its 5-field form.
    """
    expression = ALIASES.get(expression.strip().lower(), expression)
    local = after.astimezone(get_zone(tz))
    six = len(expression.split()) == 6
    nxt: datetime = croniter(expression, local, second_at_beginning=six).get_next(datetime)
    return nxt.astimezone(timezone.utc)
