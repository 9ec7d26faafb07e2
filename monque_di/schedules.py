"""The ``@Job(schedule=...)`` schedules an app registered, and pruning the ones it dropped.

Which stored schedules are this app's? The jobs collection cannot say: other services, and the
TypeScript Monque, store schedules there too, and nothing in a schedule names who created it.
So every time the engine resource registers its ``@Job(schedule=...)`` classes it also records
them, as ``(owner, name, unique_key)``, in the ``<collection>_di_schedules`` collection.
``owner`` is ``config.monque.schedule_owner``, by default the app container's class
(``module.QualName``), else the job sources.

With ``prune_schedules`` on, a start then removes (``Monque.unschedule``) every schedule this
owner recorded that no ``@Job(schedule=...)`` of the app declares any more (the class is gone,
or lost its ``schedule=``, or changed its ``unique_key``), and forgets the record. Schedules it
never recorded are never touched: the ones other apps, the CLI or plain ``Monque.schedule()``
created, and the ones from before this record existed (``monque.unschedule(name)`` those).
A schedule running at that moment is left for the next start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from monque.engine import Monque
from monque.errors import JobStateError
from monque.storage import Call, JobCollection, Operation
from monque_di.decorators import JobSpec

__all__ = ["ScheduleRecord", "default_owner", "prune_async", "prune_sync"]

log = logging.getLogger("monque_di")

Entry = tuple[str, str | None]  # (name, unique_key); None: the name's own schedule


def default_owner(app: Any, jobs: Iterable[object]) -> str:
    """The app container's declarative class, else the job sources, as a dotted name."""
    parent = getattr(app, "declarative_parent", None)
    if parent is not None:
        return f"{parent.__module__}.{parent.__qualname__}"
    names = sorted(_source_name(source) for source in jobs)
    return ",".join(names) or "monque_di"


def _source_name(source: object) -> str:
    if isinstance(source, str):
        return source
    if isinstance(source, type):
        return f"{source.__module__}.{source.__qualname__}"
    return str(getattr(source, "__name__", source))


def _entries(specs: Iterable[JobSpec]) -> list[Entry]:
    return [(s.name, s.unique_key) for s in specs if s.schedule is not None]


def _record_id(owner: str, entry: Entry) -> str:
    return json.dumps([owner, entry[0], entry[1]])


def _record(owner: str, entries: list[Entry], now: datetime) -> Operation[None]:
    for entry in entries:
        yield Call(
            "update_one",
            (
                {"_id": _record_id(owner, entry)},
                {
                    "$set": {
                        "owner": owner,
                        "name": entry[0],
                        "uniqueKey": entry[1],
                        "updatedAt": now,
                    }
                },
            ),
            {"upsert": True},
        )


def _recorded(owner: str) -> Operation[list[Entry]]:
    docs = yield Call("find", ({"owner": owner},))
    return [(d["name"], d.get("uniqueKey")) for d in docs]


def _forget(owner: str, entry: Entry) -> Operation[None]:
    yield Call("delete_one", ({"_id": _record_id(owner, entry)},))


class ScheduleRecord:
    """The record of one owner's schedules, next to the engine's jobs collection."""

    def __init__(self, monque: Monque, owner: str) -> None:
        self.monque = monque
        self.owner = owner
        self.store = JobCollection(monque.database, f"{monque.options.collection}_di_schedules")


async def prune_async(record: ScheduleRecord, specs: list[JobSpec], prune: bool) -> list[Entry]:
    """Record the app's schedules; with ``prune``, unschedule the recorded ones it dropped."""
    current = _entries(specs)
    await record.store.run(_record(record.owner, current, record.monque.clock.now()))
    if not prune:
        return []
    pruned: list[Entry] = []
    for entry in await record.store.run(_recorded(record.owner)):
        if entry in current:
            continue
        try:
            await record.monque.unschedule(entry[0], unique_key=entry[1])
        except JobStateError as exc:
            log.warning("schedule %r not pruned yet: %s", entry[0], exc)
            continue
        await record.store.run(_forget(record.owner, entry))
        _log_pruned(entry)
        pruned.append(entry)
    return pruned


def prune_sync(record: ScheduleRecord, specs: list[JobSpec], prune: bool) -> list[Entry]:
    current = _entries(specs)
    record.store.run_sync(_record(record.owner, current, record.monque.clock.now()))
    if not prune:
        return []
    pruned: list[Entry] = []
    for entry in record.store.run_sync(_recorded(record.owner)):
        if entry in current:
            continue
        try:
            record.monque.unschedule_sync(entry[0], unique_key=entry[1])
        except JobStateError as exc:
            log.warning("schedule %r not pruned yet: %s", entry[0], exc)
            continue
        record.store.run_sync(_forget(record.owner, entry))
        _log_pruned(entry)
        pruned.append(entry)
    return pruned


def _log_pruned(entry: Entry) -> None:
    key = f" (unique_key {entry[1]!r})" if entry[1] is not None else ""
    log.info("pruned schedule %r%s: no @Job(schedule=...) declares it any more", entry[0], key)
