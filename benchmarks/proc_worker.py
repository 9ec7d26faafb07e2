"""A worker process for the multi-process scenarios: ``python -m benchmarks.proc_worker``."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection

from monque import Job, Monque


def floor_step(coll: Collection[dict[str, Any]]) -> bool:
    """One job of the bare floor loop: claim with find_one_and_update, complete with update_one."""
    now = datetime.now(timezone.utc)
    doc = coll.find_one_and_update(
        {"name": "bench", "status": "pending", "nextRunAt": {"$lte": now}},
        {"$set": {"status": "processing", "lockedAt": now}},
        sort=[("priority", -1), ("nextRunAt", 1)],
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        return False
    coll.update_one({"_id": doc["_id"], "status": "processing"}, {"$set": {"status": "completed"}})
    return True


def floor(uri: str, db_name: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client[db_name].monque_jobs
    while True:
        if not floor_step(coll):
            if coll.count_documents({"status": "pending"}) == 0:
                return
            time.sleep(0.01)


def register_noop(monque: Monque, kind: str) -> None:
    """The no-op ``bench`` handler, ``async def`` or plain ``def``."""
    if kind == "async":

        async def handler(job: Job[Any]) -> None:
            return None

        monque.worker("bench", handler)
    else:
        monque.worker("bench", lambda job: None)


def engine(uri: str, db_name: str, kind: str) -> None:
    monque = Monque(MongoClient(uri), database=db_name, poll_interval=0.05, worker_concurrency=1)
    register_noop(monque, kind)
    monque.run_sync()


if __name__ == "__main__":
    mode, uri, db_name = sys.argv[1:4]
    if mode == "floor":
        floor(uri, db_name)
    else:
        engine(uri, db_name, mode)
