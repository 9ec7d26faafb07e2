"""The engine's lifecycle as dependency-injector resources (async and sync)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from monque.engine import Monque
from monque.errors import InvalidOptionError
from monque.events import Events
from monque.options import MonqueOptions
from monque_di.decorators import JobSpec
from monque_di.discovery import discover_jobs
from monque_di.resolution import (
    check_resolvable,
    check_resolvable_sync,
    make_handler,
    resolver_for,
)

__all__ = ["build_engine", "engine_resource", "engine_resource_sync", "options_from_config"]

_CONTAINER_KEYS = {"database", "producer_only"}
_FIELD_TYPES = {f.name: f.type for f in fields(MonqueOptions)}


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
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise InvalidOptionError(f"config {key}: {value!r} is not a boolean")
    try:
        return int(text) if "int" in kind else float(text)
    except ValueError:
        raise InvalidOptionError(f"config {key}: {value!r} is not a number") from None


def _flag(config: Mapping[str, Any] | None, key: str) -> bool:
    value = (config or {}).get(key, False)
    return bool(_coerce(key, value, "bool")) if isinstance(value, str) else bool(value)


def build_engine(
    connection: object, config: Mapping[str, Any] | None, jobs: Iterable[object], app: Any
) -> tuple[Monque, list[JobSpec], list[Any]]:
    """A configured engine with one worker per ``@Job`` class (not started)."""
    specs = discover_jobs(jobs or ())
    database = (config or {}).get("database")
    monque = Monque(
        connection,
        database=database,
        known_jobs=[s.name for s in specs] if specs else None,
        **options_from_config(config),
    )
    resolvers = []
    for spec in specs:
        resolve = resolver_for(app, spec)
        resolvers.append(resolve)
        monque.worker(spec.name, make_handler(spec, resolve), concurrency=spec.concurrency)
    return monque, specs, resolvers


def _schedules(specs: list[JobSpec]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """The ``schedule()`` calls the ``@Job(schedule=...)`` classes ask for."""
    return [
        (s.schedule, s.name, s.data, {"unique_key": s.unique_key, "timezone": s.timezone})
        for s in specs
        if s.schedule is not None
    ]


async def engine_resource(
    connection: object,
    config: Mapping[str, Any] | None = None,
    jobs: Iterable[object] = (),
    app: Any = None,
) -> AsyncIterator[Monque]:
    """Initialize (indexes, schedules), start unless producer-only; stop on shutdown."""
    monque, specs, resolvers = build_engine(connection, config, jobs, app)
    producer_only = _flag(config, "producer_only")
    if not producer_only:
        for spec, resolve in zip(specs, resolvers, strict=True):
            await check_resolvable(spec, resolve)
    await monque.initialize()
    for cron, name, data, options in _schedules(specs):
        await monque.schedule(cron, name, data, **options)
    if not producer_only:
        await monque.start()
    try:
        yield monque
    finally:
        await monque.stop()


def engine_resource_sync(
    connection: object,
    config: Mapping[str, Any] | None = None,
    jobs: Iterable[object] = (),
    app: Any = None,
) -> Iterator[Monque]:
    """The same for apps without an event loop; a worker runs on a background thread."""
    monque, specs, resolvers = build_engine(connection, config, jobs, app)
    producer_only = _flag(config, "producer_only")
    if not producer_only:
        for spec, resolve in zip(specs, resolvers, strict=True):
            check_resolvable_sync(spec, resolve)
    monque.initialize_sync()
    for cron, name, data, options in _schedules(specs):
        monque.schedule_sync(cron, name, data, **options)
    thread: threading.Thread | None = None
    if not producer_only:
        started = threading.Event()
        monque.once(Events.WORKER_STARTED, started.set)
        thread = threading.Thread(
            target=monque.run_sync,
            kwargs={"handle_signals": False},
            name="monque-worker",
            daemon=True,
        )
        thread.start()
        started.wait(30)
    try:
        yield monque
    finally:
        if thread is not None:
            monque.request_stop()
            thread.join(monque.options.shutdown_timeout + 5)
