"""A worker whose handler never returns: ``python -m tests.procs.stuck URI DB KIND TIMEOUT``.

KIND ``sync`` blocks a thread and ignores ``should_stop``; ``async`` awaits forever and ignores
cancellation once. Prints ``running`` when the handler started, so the test can signal it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from pymongo import MongoClient

from monque import Job, Monque


def main() -> None:
    uri, db_name, kind, timeout = sys.argv[1:5]
    client: MongoClient[dict[str, Any]] = MongoClient(uri, heartbeatFrequencyMS=500)
    monque = Monque(client[db_name], poll_interval=0.05, shutdown_timeout=float(timeout))

    if kind == "sync":

        @monque.worker("stuck")
        def stuck(job: Job[Any]) -> None:
            print("running", flush=True)
            threading.Event().wait(60)

    else:

        @monque.worker("stuck")
        async def stuck_async(job: Job[Any]) -> None:
            print("running", flush=True)
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(60)  # a handler that does not give up at once

    monque.enqueue_sync("stuck")
    monque.run_sync()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
