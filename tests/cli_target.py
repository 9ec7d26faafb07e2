"""Targets for ``monque worker`` in the CLI tests."""

from __future__ import annotations

import os
from typing import Any

from pymongo import MongoClient

from monque import Job, Monque


def make_monque() -> Monque:
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
    monque = Monque(client, database=os.environ["MONQUE_DB"], poll_interval=0.05)

    @monque.worker("cli-job")
    def handle(job: Job[Any]) -> None:
        client[os.environ["MONQUE_DB"]].done.insert_one({"job": job.id})

    @monque.worker("other-job")
    def other(job: Job[Any]) -> None:
        raise AssertionError("excluded by --names")

    return monque


# Set by the in-process CLI tests.
shared: Monque | None = None
container: Any = None
