"""An asyncio-only worker process: ``python -m tests.procs.async_worker URI DB ID``.

For runs under Debian's ``faketime``: libfaketime 0.9.10 shifts the monotonic clock too, which
breaks absolute-deadline waits of threads (``threading.Event.wait`` hangs), while an event loop
with the async driver waits with relative timeouts only. Records runs like ``tests.procs.worker``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from pymongo import AsyncMongoClient

from monque import Job, Monque


async def main() -> None:
    uri, db_name, instance_id = sys.argv[1:4]
    options: dict[str, Any] = json.loads(os.environ.get("MONQUE_TEST_OPTIONS", "{}"))
    work = float(os.environ.get("MONQUE_TEST_WORK", "0.02"))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, heartbeatFrequencyMS=500)
    db = client[db_name]
    monque = Monque(db, instance_id=instance_id, **options)

    @monque.worker("proc-job")
    async def handler(job: Job[Any]) -> None:
        await db.runs.insert_one(
            {"job": job.id, "instance": instance_id, "phase": "start", "at": time.time()}
        )
        await asyncio.sleep(work)
        await db.runs.insert_one(
            {"job": job.id, "instance": instance_id, "phase": "end", "at": time.time()}
        )

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, monque.request_stop)
    monque.once("worker:started", lambda: print("ready", flush=True))
    await monque.run()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
