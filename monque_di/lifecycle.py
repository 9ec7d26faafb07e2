"""The engine's lifecycle as dependency-injector resources (async and sync).

Container keys of ``config`` (the rest are ``Monque`` options, see ``MonqueOptions``):

- ``database``: the database of a client handle.
- ``producer_only``: initialize and register schedules, never process (a web process).
- ``known_jobs``: off by default (any name can be enqueued, as other services and the
  TypeScript Monque may process names this app has no ``@Job`` for); ``True``: only the app's
  ``@Job`` names, so a typo is an ``UnknownJobError``; a list (or a comma-separated string):
  those names (plus the app's ``@Job(schedule=...)`` names, which it registers itself).
- ``prune_schedules``: remove, at start, the schedules this app's ``@Job(schedule=...)``
  classes created and no class declares any more (see ``monque_di.schedules``); off by default.
- ``schedule_owner``: who "this app" is for ``prune_schedules`` (default: the app container's
  class).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from dependency_injector import errors as di_errors
from dependency_injector import providers

from monque.engine import Monque
from monque.errors import InvalidOptionError
from monque.events import Events
from monque.options import MonqueOptions
from monque_di.decorators import JobSpec
from monque_di.discovery import discover_jobs
from monque_di.errors import ContainerError
from monque_di.resolution import (
    Resolver,
    check_resolvable,
    check_resolvable_sync,
    check_wiring,
    discard,
    make_handler,
    resolver_for,
)
from monque_di.schedules import ScheduleRecord, default_owner, prune_async, prune_sync

__all__ = [
    "WorkerSettings",
    "build_engine",
    "container_errors",
    "engine_resource",
    "engine_resource_sync",
    "options_from_config",
]

log = logging.getLogger("monque_di")

_CONTAINER_KEYS = {"database", "producer_only", "known_jobs", "prune_schedules", "schedule_owner"}
_FIELD_TYPES = {f.name: f.type for f in fields(MonqueOptions)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class WorkerSettings:
    """Process-level choices applied to the engine before it starts (``configure_workers``).

    ``only``: the job names this process processes (``@Job`` names; default all);
    ``concurrency``: every worker's concurrency; ``start=False``: the resource initializes
    and registers schedules but leaves starting to the caller (``run_worker``), whatever
    ``producer_only`` says.
    """

    only: tuple[str, ...] | None = None
    concurrency: int | None = None
    start: bool = True


def options_from_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Engine options from a config mapping; strings (from env or YAML) become numbers/bools."""
    options: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key in _CONTAINER_KEYS or value is None:
            continue
        kind = str(_FIELD_TYPES.get(key, ""))
        if isinstance(value, str) and kind and "str" not in kind:
            value = _coerce(key, value, kind)
        options[key] = value
    return options


def _coerce(key: str, value: str, kind: str) -> Any:
    text = value.strip().lower()
    if kind == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidOptionError(f"config {key}: {value!r} is not a boolean")
    try:
        return int(text) if "int" in kind else float(text)
    except ValueError:
        raise InvalidOptionError(f"config {key}: {value!r} is not a number") from None


def _flag(config: Mapping[str, Any] | None, key: str) -> bool:
    value = (config or {}).get(key, False)
    return bool(_coerce(key, value, "bool")) if isinstance(value, str) else bool(value)


def known_jobs_from_config(value: object, specs: list[JobSpec]) -> list[str] | None:
    """``config.monque.known_jobs``: None/False off, True the app's ``@Job`` names, or names."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        value = value.strip().lower() in _TRUE
    if value is None or value is False:
        return None
    if value is True:
        if not specs:
            raise InvalidOptionError(
                "config known_jobs=True means the app's @Job names, but the container lists "
                "no @Job classes; list the names instead"
            )
        return [s.name for s in specs]
    names: list[Any] | None = None
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        names = list(value)
    if names is not None and all(isinstance(n, str) for n in names):
        # The app's own @Job(schedule=...) registrations are always allowed.
        return names + [s.name for s in specs if s.schedule is not None and s.name not in names]
    raise InvalidOptionError(
        f"config known_jobs: True, False, or a list of job names; got {value!r}"
    )


# -- errors of the container --------------------------------------------------------------


@contextmanager
def container_errors(what: str = "the container") -> Iterator[None]:
    """dependency-injector's errors (an undefined configuration option, a ``Dependency``
    nobody provided) as one-line ``ContainerError``s."""
    try:
        yield
    except di_errors.Error as exc:
        raise ContainerError(_explain(what, exc)) from None


def _explain(what: str, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Undefined configuration option" in text:
        hint = "set it (container.config.from_dict/from_yaml/from_env...) before init_resources()"
    elif "is not defined" in text:
        hint = "provide it when creating the container, e.g. AppContainer(connection=...)"
    else:
        hint = "check the container's providers"
    return f"{what} cannot be built: {text}; {hint}"


def _provided(value: object, what: str) -> Any:
    """Call a delegated provider inside ``container_errors``; plain values pass through."""
    if not isinstance(value, providers.Provider):
        return value
    with container_errors(what):
        return value()


async def _provided_async(value: object, what: str) -> Any:
    result = _provided(value, what)
    if inspect.isawaitable(result):
        with container_errors(what):
            result = await result
    return result


def _provided_sync(value: object, what: str) -> Any:
    result = _provided(value, what)
    if inspect.isawaitable(result):
        discard(result)
        raise ContainerError(
            f"{what} is provided asynchronously; the SyncMonqueContainer needs a sync one "
            "(or use MonqueContainer)"
        )
    return result


# -- building -----------------------------------------------------------------------------


def build_engine(
    connection: object,
    config: Mapping[str, Any] | None,
    jobs: Iterable[object],
    app: Any,
    settings: WorkerSettings | None = None,
) -> tuple[Monque, list[JobSpec], list[Resolver]]:
    """A configured engine with one worker per ``@Job`` class (not started), narrowed by
    ``settings`` (``only``, ``concurrency``). Returns the engine, the specs of the workers it
    kept, and their resolvers; every spec's schedule is still the app's."""
    specs = discover_jobs(jobs or ())
    config = config or {}
    monque = Monque(
        connection,
        database=config.get("database"),
        known_jobs=known_jobs_from_config(config.get("known_jobs"), specs),
        **options_from_config(config),
    )
    resolvers: dict[str, Resolver] = {}
    for spec in specs:
        resolve = resolver_for(app, spec)
        resolvers[spec.name] = resolve
        monque.worker(spec.name, make_handler(spec, resolve, app), **spec.worker_options())
    if settings is not None and (settings.only is not None or settings.concurrency is not None):
        monque.configure_workers(only=settings.only, concurrency=settings.concurrency)
    kept = [s for s in specs if s.name in set(monque.worker_names)]
    return monque, kept, [resolvers[s.name] for s in kept]


@dataclass
class _Plan:
    monque: Monque
    specs: list[JobSpec]  # every @Job class: their schedules
    workers: list[tuple[JobSpec, Resolver]]  # the ones this process processes
    processes: bool  # jobs will be processed (here or by the caller)
    starts: bool  # the resource starts the engine itself
    prune: bool
    owner: str


def _plan(
    connection: object,
    config: Mapping[str, Any] | None,
    jobs: Iterable[object],
    app: Any,
    settings: WorkerSettings | None,
) -> _Plan:
    settings = settings or WorkerSettings()
    sources = list(jobs or ())
    monque, kept, resolvers = build_engine(connection, config, sources, app, settings)
    producer_only = _flag(config, "producer_only")
    processes = not settings.start or not producer_only
    owner = (config or {}).get("schedule_owner") or default_owner(app, sources)
    return _Plan(
        monque,
        discover_jobs(sources),
        list(zip(kept, resolvers, strict=True)),
        processes,
        processes and settings.start,
        _flag(config, "prune_schedules"),
        str(owner),
    )


def _schedules(specs: list[JobSpec]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """The ``schedule()`` calls the ``@Job(schedule=...)`` classes ask for."""
    return [
        (
            s.schedule,
            s.name,
            s.data,
            {"unique_key": s.unique_key, "timezone": s.timezone, "priority": s.priority},
        )
        for s in specs
        if s.schedule is not None
    ]


# -- the resources ------------------------------------------------------------------------


async def engine_resource(
    connection: object,
    config: object = None,
    jobs: Iterable[object] = (),
    app: Any = None,
    settings: WorkerSettings | None = None,
) -> AsyncIterator[Monque]:
    """Initialize (indexes, schedules), start unless producer-only; stop on shutdown.

    ``connection`` and ``config`` may be providers (the container passes them delegated), so
    that what they fail with is a ``ContainerError``.
    """
    connection = await _provided_async(connection, "the connection")
    config = await _provided_async(config, "the monque config")
    plan = _plan(connection, _mapping(config), jobs, app, settings)
    monque = plan.monque
    if plan.processes:
        for spec, resolve in plan.workers:
            check_wiring(spec, app)
            await check_resolvable(spec, resolve, app)
    await monque.initialize()
    for cron, name, data, options in _schedules(plan.specs):
        await monque.schedule(cron, name, data, **options)
    await prune_async(ScheduleRecord(monque, plan.owner), plan.specs, plan.prune)
    if plan.starts:
        await monque.start()
    try:
        yield monque
    finally:
        await monque.stop()


def engine_resource_sync(
    connection: object,
    config: object = None,
    jobs: Iterable[object] = (),
    app: Any = None,
    settings: WorkerSettings | None = None,
) -> Iterator[Monque]:
    """The same for apps without an event loop; a worker runs on a background thread.

    A worker that fails to start (an ``InstanceIdConflictError``, a database gone between
    the set-up and the start) raises here at once, and leaves nothing to shut down.
    """
    connection = _provided_sync(connection, "the connection")
    config = _provided_sync(config, "the monque config")
    plan = _plan(connection, _mapping(config), jobs, app, settings)
    monque = plan.monque
    if plan.processes:
        for spec, resolve in plan.workers:
            check_wiring(spec, app)
            check_resolvable_sync(spec, resolve, app)
    monque.initialize_sync()
    for cron, name, data, options in _schedules(plan.specs):
        monque.schedule_sync(cron, name, data, **options)
    prune_sync(ScheduleRecord(monque, plan.owner), plan.specs, plan.prune)
    thread = _start_in_thread(monque) if plan.starts else None
    try:
        yield monque
    finally:
        if thread is not None:
            monque.request_stop()
            thread.join(monque.options.shutdown_timeout + 5)


def _mapping(config: object) -> Mapping[str, Any] | None:
    if config is None or isinstance(config, Mapping):
        return config
    raise ContainerError(f"the monque config must be a mapping, got {type(config).__name__}")


def _start_in_thread(monque: Monque) -> threading.Thread:
    """Run ``monque.run_sync()`` on a daemon thread; return once it runs, or raise what its
    start failed with."""
    ready = threading.Event()
    failure: list[BaseException] = []
    running = [False]

    def started() -> None:
        running[0] = True
        ready.set()

    def target() -> None:
        try:
            monque.run_sync(handle_signals=False)
        except BaseException as exc:
            failure.append(exc)
            if running[0]:
                log.error("the monque worker thread stopped on an error", exc_info=exc)
        finally:
            ready.set()

    monque.once(Events.WORKER_STARTED, started)
    thread = threading.Thread(target=target, name="monque-worker", daemon=True)
    thread.start()
    ready.wait()
    if not running[0]:
        monque.off(Events.WORKER_STARTED, started)
        thread.join()
        raise failure[0] if failure else ContainerError("the monque worker did not start")
    return thread
