"""``@Job``: mark a class whose ``handle(self, job)`` processes jobs of one name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from monque.cron import check_cron, get_zone
from monque.durations import to_seconds
from monque.errors import MonqueError
from monque.validation import check_name, check_priority, check_unique_key
from monque.worker import is_async_callable
from monque_di.errors import JobDefinitionError

__all__ = ["Job", "JobSpec", "job_spec"]

C = TypeVar("C", bound=type)

_ATTRIBUTE = "__monque_job__"


@dataclass(frozen=True)
class JobSpec:
    """What ``@Job`` recorded on a class.

    ``concurrency``, ``timeout``, ``max_retries``, ``backoff_base``, ``max_backoff`` and
    ``non_retryable`` go to ``Monque.worker()``; ``schedule``, ``timezone``, ``unique_key``,
    ``data`` and ``priority`` to ``Monque.schedule()``.
    """

    cls: type
    name: str
    concurrency: int | None = None
    schedule: str | None = None
    timezone: str | None = None
    unique_key: str | None = None
    data: Any = None
    timeout: float | timedelta | None = None
    max_retries: int | None = None
    backoff_base: float | timedelta | None = None
    max_backoff: float | timedelta | None = None
    non_retryable: tuple[type[BaseException], ...] = ()
    priority: int = 0

    @property
    def is_async(self) -> bool:
        return is_async_callable(self.cls.handle)  # type: ignore[attr-defined]

    def worker_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Monque.worker()`` this spec sets."""
        return {
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "backoff_base": self.backoff_base,
            "max_backoff": self.max_backoff,
            "non_retryable": self.non_retryable,
        }


def Job(
    *,
    name: str,
    concurrency: int | None = None,
    timeout: float | timedelta | None = None,
    max_retries: int | None = None,
    backoff_base: float | timedelta | None = None,
    max_backoff: float | timedelta | None = None,
    non_retryable: Iterable[type[BaseException]] = (),
    schedule: str | None = None,
    timezone: str | None = None,
    unique_key: str | None = None,
    data: Any = None,
    priority: int = 0,
) -> Callable[[C], C]:
    """Declare a job handler class.

    The worker options are ``Monque.worker()``'s: ``concurrency`` (jobs of this name at once
    on one instance), ``timeout`` (seconds or ``timedelta`` per run), ``max_retries``,
    ``backoff_base`` and ``max_backoff`` (this name's retry policy, overriding the engine's),
    and ``non_retryable`` (exception types that fail the job at once). Every option is
    checked here, at decoration time: a bad one is a ``JobDefinitionError``.

    ``schedule`` (cron, evaluated in ``timezone``) also registers a recurring job (with
    ``data`` and ``priority``) keyed by ``unique_key`` or, without one, by its name, so
    restarts and many instances never duplicate it.

    The class is resolved from the app's container on every run: through the app's own
    provider for it if it declares one (a ``Factory(MyJob, dep=...)``: constructor injection,
    no wiring needed), else built directly. ``Provide[...]``/``Closing[...]`` markers in
    ``__init__`` or ``handle`` only work once the module is wired: decorate the method with
    dependency-injector's ``@inject`` and call ``container.wire(modules=[...])`` (or declare
    ``wiring_config`` on the container) before ``init_resources()``.
    """
    where = f"@Job({name!r})"
    try:
        check_name(name)
    except MonqueError as exc:
        raise JobDefinitionError(f"@Job(name=...): {exc}") from exc
    options = _check_worker_options(
        where, concurrency, timeout, max_retries, backoff_base, max_backoff, non_retryable
    )
    _check_schedule_options(where, schedule, timezone, unique_key, data, priority)
    if schedule is not None:
        schedule = check_cron(schedule)

    def decorate(cls: C) -> C:
        if not inspect.isclass(cls):
            raise JobDefinitionError(f"{where} decorates classes, not {cls!r}")
        if not callable(getattr(cls, "handle", None)):
            raise JobDefinitionError(
                f"{where} class {cls.__qualname__} has no handle(self, job) method"
            )
        spec = JobSpec(
            cls,
            name,
            concurrency,
            schedule,
            timezone,
            unique_key,
            data,
            priority=priority,
            **options,
        )
        setattr(cls, _ATTRIBUTE, spec)
        return cls

    return decorate


def _check_worker_options(
    where: str,
    concurrency: object,
    timeout: object,
    max_retries: object,
    backoff_base: object,
    max_backoff: object,
    non_retryable: object,
) -> dict[str, Any]:
    if concurrency is not None and not _is_int_at_least(concurrency, 1):
        raise JobDefinitionError(f"{where}: concurrency must be an int >= 1, got {concurrency!r}")
    if max_retries is not None and not _is_int_at_least(max_retries, 1):
        raise JobDefinitionError(f"{where}: max_retries must be an int >= 1, got {max_retries!r}")
    seconds: dict[str, float] = {}
    for option, value in (
        ("timeout", timeout),
        ("backoff_base", backoff_base),
        ("max_backoff", max_backoff),
    ):
        if value is not None:
            try:
                seconds[option] = to_seconds(value, option)
            except MonqueError as exc:
                raise JobDefinitionError(f"{where}: {exc}") from exc
    if seconds.get("max_backoff", float("inf")) < seconds.get("backoff_base", 0.0):
        raise JobDefinitionError(f"{where}: max_backoff must be >= backoff_base")
    if isinstance(non_retryable, type) or not isinstance(non_retryable, Iterable):
        raise JobDefinitionError(
            f"{where}: non_retryable takes an iterable of exception classes, got {non_retryable!r}"
        )
    errors = tuple(non_retryable)
    for error in errors:
        if not (inspect.isclass(error) and issubclass(error, BaseException)):
            raise JobDefinitionError(
                f"{where}: non_retryable takes exception classes, got {error!r}"
            )
    return {
        "timeout": timeout,
        "max_retries": max_retries,
        "backoff_base": backoff_base,
        "max_backoff": max_backoff,
        "non_retryable": errors,
    }


def _check_schedule_options(
    where: str,
    schedule: str | None,
    timezone: str | None,
    unique_key: str | None,
    data: Any,
    priority: object,
) -> None:
    try:
        if schedule is not None:
            check_cron(schedule)
            get_zone(timezone)
        elif timezone is not None or data is not None or priority != 0:
            raise JobDefinitionError(
                f"{where}: timezone, data and priority only apply with schedule="
            )
        if unique_key is not None:
            check_unique_key(unique_key)
        check_priority(priority)
    except JobDefinitionError:
        raise
    except MonqueError as exc:
        raise JobDefinitionError(f"{where}: {exc}") from exc


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def job_spec(obj: object) -> JobSpec | None:
    """The spec of a class decorated with ``@Job`` itself (not inherited from a parent)."""
    if not inspect.isclass(obj):
        return None
    spec = obj.__dict__.get(_ATTRIBUTE)
    return spec if isinstance(spec, JobSpec) else None
