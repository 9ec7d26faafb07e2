"""MongoDB access: operations written once, executed by a sync or an async driver."""

from monque.storage.calls import Call, JobCollection, Operation
from monque.storage.indexes import ensure_indexes

__all__ = ["Call", "JobCollection", "Operation", "ensure_indexes"]
