"""The indexes the engine needs, created only where no equivalent one exists.

- ``monque_claim`` (name, status, priority desc, nextRunAt): the claim query filters on name
  (``$in`` over the registered names) and ``status`` by equality and reads due jobs in
  (priority desc, nextRunAt) order straight from the index, with no in-memory sort.
- ``name_1_uniqueKey_1`` (name, uniqueKey), unique over pending and processing jobs:
  de-duplication holds under concurrent enqueues on any number of instances. The TypeScript
  Monque creates the very same index under this name, so either side finds the other's.
- ``monque_next_due`` (name, status, nextRunAt): when the earliest pending job of the
  worker's names is due, read as the first key of each name's range (a SORT_MERGE of index
  scans, no in-memory sort), so a worker with a change stream can arm a timer for it.
- ``monque_leases`` (lockExpiresAt) over processing jobs only: the recovery sweep reads just
  expired leases (and, as the null key, jobs held without one); it stays tiny.
- ``monque_cancel_requests`` over jobs with a cancel request only (a handful): the sweep finds
  pending ones, which the TypeScript Monque leaves behind when it reschedules or retries a job
  whose running cancel it ignored.
- ``monque_retention`` (expireAt, TTL) over finished jobs only, when ``retention`` is set: a
  job retried by the TypeScript Monque keeps its ``expireAt`` but is no longer deleted.

An existing index with the same key, uniqueness, partial filter and TTL (whatever its name)
is used as it is. One that holds the name or the key with other options is an
``IndexConflictError`` naming both, never a raw server error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import OperationFailure

from monque.errors import IndexConflictError
from monque.job import JobStatus
from monque.storage.calls import Call, Operation

__all__ = ["INDEXES", "RETENTION_INDEX", "ensure_indexes", "ensure_models", "equivalent"]

ACTIVE = [JobStatus.PENDING.value, JobStatus.PROCESSING.value]
FINISHED = [JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value]

INDEXES = [
    IndexModel(
        [
            ("name", ASCENDING),
            ("status", ASCENDING),
            ("priority", DESCENDING),
            ("nextRunAt", ASCENDING),
        ],
        name="monque_claim",
    ),
    IndexModel(
        [("name", ASCENDING), ("uniqueKey", ASCENDING)],
        name="name_1_uniqueKey_1",
        unique=True,
        partialFilterExpression={"uniqueKey": {"$exists": True}, "status": {"$in": ACTIVE}},
        # Exactly the TypeScript Monque's spec, option order included: mongod ignores
        # ``background`` since 4.2, but a server that compares it would otherwise refuse the
        # second side's createIndexes (IndexKeySpecsConflict).
        background=True,
    ),
    IndexModel(
        [("name", ASCENDING), ("status", ASCENDING), ("nextRunAt", ASCENDING)],
        name="monque_next_due",
    ),
    IndexModel(
        [("lockExpiresAt", ASCENDING)],
        name="monque_leases",
        partialFilterExpression={"status": JobStatus.PROCESSING.value},
    ),
    IndexModel(
        [("cancelRequested", ASCENDING)],
        name="monque_cancel_requests",
        partialFilterExpression={"cancelRequested": True},
    ),
]


# Only when retention is configured: finished jobs carry ``expireAt`` and mongod deletes them.
RETENTION_INDEX = IndexModel(
    [("expireAt", ASCENDING)],
    name="monque_retention",
    expireAfterSeconds=0,
    partialFilterExpression={"status": {"$in": FINISHED}},
)

# What makes two indexes the same index; the rest (``v``, ``ns``, ``background``) does not.
_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "collation")
_CONFLICT_CODES = {85, 86}  # IndexOptionsConflict, IndexKeySpecsConflict
_INDEX_NOT_FOUND = 27


def _key(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(field, _number(direction)) for field, direction in dict(spec["key"]).items()]


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _plain(value: Any) -> Any:
    # SON and dict compare alike, numbers by value: 1 == 1.0.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _number(value)


def equivalent(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same key, uniqueness, sparseness, partial filter, TTL and collation."""
    if _key(a) != _key(b):
        return False
    return all(
        _plain(a.get(o, False if o in ("unique", "sparse") else None))
        == _plain(b.get(o, False if o in ("unique", "sparse") else None))
        for o in _OPTIONS
    )


def _describe(spec: Mapping[str, Any]) -> str:
    options = {o: _plain(spec[o]) for o in _OPTIONS if o in spec}
    return f"{spec.get('name')!r} {dict(_key(spec))}" + (f" {options}" if options else "")


def _conflict(wanted: Mapping[str, Any], existing: Mapping[str, Any] | None) -> IndexConflictError:
    there = f"the existing index {_describe(existing)}" if existing else "an existing index"
    name = existing.get("name") if existing else None
    drop = f"db.monque_jobs.dropIndex({name!r})" if name else "drop the conflicting index"
    return IndexConflictError(
        f"Monque needs the index {_describe(wanted)}, which conflicts with {there}. Either "
        f"{drop} and start again (Monque creates its own), or pass create_indexes=False "
        "and manage the indexes yourself (docs/typescript-interop.md lists them).",
        str(wanted.get("name")),
        str(name) if name else None,
    )


def _plan(
    models: Sequence[IndexModel],
    existing: Sequence[Mapping[str, Any]],
    replaceable: Collection[str] = (),
) -> tuple[list[IndexModel], list[str]]:
    """The models to create and the existing indexes to drop first (an old definition of one
    named in ``replaceable``); raises ``IndexConflictError`` for anything else in the way."""
    create: list[IndexModel] = []
    drop: list[str] = []
    by_name = {str(spec.get("name")): spec for spec in existing}
    for model in models:
        wanted = model.document
        same_name = by_name.get(wanted["name"])
        if same_name is not None:
            if equivalent(same_name, wanted):
                continue
            if wanted["name"] not in replaceable:
                raise _conflict(wanted, same_name)
            drop.append(wanted["name"])  # our own index in an earlier definition
        elif any(equivalent(spec, wanted) for spec in existing):
            continue
        create.append(model)
    return create, drop


def ensure_indexes(retention: bool = False) -> Operation[list[str]]:
    """Create the missing indexes; returns the names created."""
    # monque_retention was not partial before 0.1.0: an old definition is replaced.
    models = [*INDEXES, RETENTION_INDEX] if retention else INDEXES
    return (yield from ensure_models(models, replaceable={RETENTION_INDEX.document["name"]}))


def ensure_models(
    models: Sequence[IndexModel], replaceable: Collection[str] = ()
) -> Operation[list[str]]:
    """Create those of ``models`` no equivalent index stands for; returns the names created.
    An index of the same name and another definition is dropped first if its name is in
    ``replaceable`` (an earlier version's), else it is an ``IndexConflictError``."""
    for attempt in range(2):
        existing: list[Mapping[str, Any]] = yield Call("list_indexes")
        create, drop = _plan(models, existing, replaceable)
        for name in drop:
            try:
                yield Call("drop_index", (name,))
            except OperationFailure as exc:
                if exc.code != _INDEX_NOT_FOUND:
                    raise  # 27: another instance replaced it first
        if not create:
            return []
        try:
            names: list[str] = yield Call("create_indexes", (create,))
            return names
        except OperationFailure as exc:
            if exc.code not in _CONFLICT_CODES:
                raise
            if attempt:
                # The same key with other options under another name: name it.
                for model in create:
                    wanted = model.document
                    culprit = next((s for s in existing if _key(s) == _key(wanted)), None)
                    if culprit is not None:
                        raise _conflict(wanted, culprit) from exc
                raise _conflict(create[0].document, None) from exc
            # Another instance (or implementation) may have just created one: plan again.
    raise AssertionError("unreachable")  # pragma: no cover
