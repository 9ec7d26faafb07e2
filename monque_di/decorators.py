"""``@Job``: mark a class whose ``handle(self, job)`` processes jobs of one name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from monque.cron import check_cron, get_zone
from monque.validation import check_name, check_unique_key
from monque.worker import is_async_callable
from monque_di.errors import JobDefinitionError

__all__ = ["Job", "JobSpec", "job_spec"]

C = TypeVar("C", bound=type)

_ATTRIBUTE = "__monque_job__"


@dataclass(frozen=True)
class JobSpec:
    """What ``@Job`` recorded on a class."""

    cls: type
    name: str
    concurrency: int | None = None
    schedule: str | None = None
    timezone: str | None = None
    unique_key: str | None = None
    data: Any = None

    @property
    def is_async(self) -> bool:
        return is_async_callable(self.cls.handle)  # type: ignore[attr-defined]


def Job(
    *,
    name: str,
    concurrency: int | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    unique_key: str | None = None,
    data: Any = None,
) -> Callable[[C], C]:
    """Declare a job handler class.

    ``schedule`` (cron, evaluated in ``timezone``) also registers a recurring job with a
    stable unique key (``unique_key`` or one derived from the name), so restarts and many
    instances never duplicate it. The class is resolved from the app's container on every run.
    """
    check_name(name)
    if schedule is not None:
        schedule = check_cron(schedule)
        get_zone(timezone)
    elif timezone is not None or data is not None:
        raise JobDefinitionError(f"@Job({name!r}): timezone and data only apply with schedule=")
    if unique_key is not None:
        check_unique_key(unique_key)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise JobDefinitionError(f"@Job({name!r}): concurrency must be an int >= 1")

    def decorate(cls: C) -> C:
        if not inspect.isclass(cls):
            raise JobDefinitionError(f"@Job({name!r}) decorates classes, not {cls!r}")
        if not callable(getattr(cls, "handle", None)):
            raise JobDefinitionError(
                f"@Job({name!r}) class {cls.__qualname__} has no handle(self, job) method"
            )
        spec = JobSpec(cls, name, concurrency, schedule, timezone, unique_key, data)
        setattr(cls, _ATTRIBUTE, spec)
        return cls

    return decorate


def job_spec(obj: object) -> JobSpec | None:
    """The spec of a class decorated with ``@Job`` itself (not inherited from a parent)."""
    if not inspect.isclass(obj):
        return None
    spec = obj.__dict__.get(_ATTRIBUTE)
    return spec if isinstance(spec, JobSpec) else None
