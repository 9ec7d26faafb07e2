"""Durations accepted as seconds (int or float) or ``timedelta``."""

from __future__ import annotations

import math
from datetime import timedelta

from monque.errors import InvalidOptionError

Duration = float | int | timedelta

__all__ = ["Duration", "to_seconds"]


def to_seconds(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Validate a duration option and return it in seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidOptionError(
            f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidOptionError(f"{name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidOptionError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds
