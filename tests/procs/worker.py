"""A worker process for crash and load tests: ``python -m tests.procs.worker URI DB ID``.

Its handler records each run's start and end in the ``runs`` collection, so the test can tell
which handlers ran twice. SIGTERM stops it gracefully; SIGKILL is the crash.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from pymongo import MongoClient

from monque import Job, Monque


def main() -> None:
    uri, db_name, instance_id = sys.argv[1:4]
    options: dict[str, Any] = json.loads(os.environ.get("MONQUE_TEST_OPTIONS", "{}"))
    work = float(os.environ.get("MONQUE_TEST_WORK", "0.02"))
    record_start = os.environ.get("MONQUE_TEST_RECORD_START", "1") == "1"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, heartbeatFrequencyMS=500)
    db = client[db_name]
    monque = Monque(db, instance_id=instance_id, **options)

    @monque.worker("proc-job")
    def handler(job: Job[Any]) -> None:
        if record_start:
            db.runs.insert_one(
                {"job": job.id, "instance": instance_id, "phase": "start", "at": time.time()}
            )
        if work:
            threading.Event().wait(work)
        db.runs.insert_one(
            {"job": job.id, "instance": instance_id, "phase": "end", "at": time.time()}
        )

    print("ready", flush=True)
    monque.run_sync()
    client.close()


if __name__ == "__main__":
    main()
