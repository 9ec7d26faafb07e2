"""The four indexes the engine needs, and no more.

- ``monque_claim`` (name, status, priority desc, nextRunAt): the claim query filters on name
  (``$in`` over the registered names) and ``status`` by equality and reads due jobs in
  (priority desc, nextRunAt) order straight from the index, with no in-memory sort.
- ``monque_unique`` (name, uniqueKey), unique over pending and processing jobs: de-duplication
  holds under concurrent enqueues on any number of instances.
- ``monque_next_due`` (name, status, nextRunAt): when the earliest pending job of the
  worker's names is due, read as the first key of each name's range (a SORT_MERGE of index
  scans, no in-memory sort), so a worker with a change stream can arm a timer for it.
- ``monque_leases`` (lockExpiresAt) over processing jobs only: the recovery sweep reads just
  expired leases; the index holds only running jobs, so it stays tiny.
"""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel

from monque.job import JobStatus
from monque.storage.calls import Call, Operation

__all__ = ["INDEXES", "ensure_indexes"]

ACTIVE = [JobStatus.PENDING.value, JobStatus.PROCESSING.value]

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
        name="monque_unique",
        unique=True,
        partialFilterExpression={"uniqueKey": {"$exists": True}, "status": {"$in": ACTIVE}},
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
]


# Only when retention is configured: finished jobs carry ``expireAt`` and mongod deletes them.
RETENTION_INDEX = IndexModel(
    [("expireAt", ASCENDING)], name="monque_retention", expireAfterSeconds=0
)


def ensure_indexes(retention: bool = False) -> Operation[list[str]]:
    models = [*INDEXES, RETENTION_INDEX] if retention else INDEXES
    names: list[str] = yield Call("create_indexes", (models,))
    return names
