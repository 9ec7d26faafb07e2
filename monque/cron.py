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
# Aliases only cron-parser knows (seconds first), so a schedule the TypeScript Monque stored
# with one is still rescheduled by a Python worker. Not accepted by ``check_cron``.
_TS_ALIASES = {
    "@secondly": "* * * * * *",
    "@minutely": "0 * * * * *",
    "@weekdays": "0 0 0 * * 1-5",
    "@weekends": "0 0 0 * * 0,6",
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


# (low, high) per field, seconds first; day-of-week 7 is Sunday as 0 is.
_BOUNDS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_ITEM = re.compile(r"^(\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/([0-9]+))?$")


class _Refused(ValueError):
    pass


def _value(text: str, field: int) -> int:
    names = _MONTHS if field == 4 else _DAYS if field == 5 else None
    if names is not None and text.upper() in names:
        return names.index(text.upper()) + (1 if field == 4 else 0)
    if not text.isdigit():
        raise _Refused(f"{text!r} is not a number" + (" or a name" if names else ""))
    value, (low, high) = int(text), _BOUNDS[field]
    if not low <= value <= high:
        raise _Refused(f"{value} is out of range {low}-{high}")
    return value


def _field(text: str, field: int) -> tuple[str, set[int]]:
    """The field as stored and its values, or ``_Refused`` where croniter and cron-parser
    would not agree: reversed (wrap-around) ranges, repeated values (cron-parser refuses
    them; day 7 repeats 0), ``a/step`` in day-of-week (cron-parser counts on to 7),
    ``a-a`` is stored as ``a`` (croniter reads it as ``*``)."""
    low, high = _BOUNDS[field]
    items: list[str] = []
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise _Refused(f"{item!r} is not a value, a range, '*' or a step")
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step_text is not None and step == 0:
            raise _Refused(f"{item!r} has a step of 0")
        if base == "*":
            first, last = low, (6 if field == 5 else high)
        elif "-" in base:
            first, last = (_value(v, field) for v in base.split("-"))
            if first > last:
                raise _Refused(f"{item!r} wraps around: write it as two ranges")
            if first == last and step_text is None:
                base = str(first)
        else:
            first = last = _value(base, field)
            if step_text is not None:
                if field == 5:
                    raise _Refused(f"{item!r}: a start with a step is read differently here")
                last = high
        new = {v % 7 if field == 5 else v for v in range(first, last + 1, step)}
        if new & values:
            raise _Refused(f"{item!r} repeats values of the field (0 and 7 are both Sunday)")
        values |= new
        if base != "*" and len(new) == 1:
            items.append(str(first))  # croniter reads a one-value range ('5-5/2') as '*'
        else:
            items.append(base + (f"/{step_text}" if step_text is not None else ""))
    return ",".join(items), values


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
    plain, named = fields[:-2], [_NAMES.sub("0", f) for f in fields[-2:]]
    if not all(_NUMERIC.match(f) for f in plain + named):
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: L, W, #, ? and H are not evaluated "
            f"the same by the TypeScript Monque; {_HELP}"
        )
    offset = 6 - len(fields)  # a 5-field expression has no seconds
    stored, sets = [], []
    for index, text in enumerate(fields):
        try:
            item, values = _field(text, index + offset)
        except _Refused as why:
            raise InvalidCronError(
                f"invalid cron expression {expression!r}: {why} (the TypeScript Monque and "
                "this one must read it alike)"
            ) from None
        stored.append(item)
        sets.append(values)
    days = fields[3 - offset], fields[5 - offset]
    if "*" not in days and any("*" in f for f in days):
        # With both day fields set one matching is enough, but the two libraries disagree on
        # whether a '*/n' field counts as set.
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: with both day-of-month and day-of-week "
            "set, give explicit days (no '*/n') so both Monques read it alike"
        )
    day_of_month, month = sets[3 - offset], sets[4 - offset]
    if not any(day <= _MONTH_DAYS[m - 1] for day in day_of_month for m in month):
        raise InvalidCronError(f"invalid cron expression {expression!r}: that date never occurs")
    result = " ".join(stored)
    if not croniter.is_valid(result, second_at_beginning=len(fields) == 6):
        raise InvalidCronError(f"invalid cron expression {expression!r}: {_HELP}")
    return result


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
    alias = expression.strip().lower()
    expression = ALIASES.get(alias) or _TS_ALIASES.get(alias) or expression
    local = after.astimezone(get_zone(tz))
    six = len(expression.split()) == 6
    nxt: datetime = croniter(expression, local, second_at_beginning=six).get_next(datetime)
    return nxt.astimezone(timezone.utc)
