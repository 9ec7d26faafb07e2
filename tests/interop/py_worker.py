"""A Python Monque worker in its own process, the twin of ``node/worker.mjs``.

``python -m tests.interop.py_worker`` reads one JSON document on stdin: ``{uri, db, options:
{Monque keyword options, e.g. instance_id, lock_timeout}, behaviours: {job name: spec}}``,
spec ``ok``, ``fail``/``fail:<message>`` or ``sleep:<ms>``. Each handler run is recorded in
``interop_runs`` ({jobId, name, side: "py", pid, instanceId, startedAt, failCount} at start,
{endedAt, outcome} at the end). Prints ``{"ready": true, ...}`` once the worker started;
SIGTERM stops it gracefully, SIGKILL is the crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from pymongo import AsyncMongoClient

from monque import Events, Job, Monque

Action = Callable[[], Awaitable[None]]


def behaviour(spec: str) -> Action:
    if spec == "ok":

        async def ok() -> None:
            return None

        return ok
    if spec == "fail" or spec.startswith("fail:"):
        message = spec[5:] or "interop failure"

        async def fail() -> None:
            raise RuntimeError(message)

        return fail
    if spec.startswith("sleep:"):
        seconds = float(spec[6:]) / 1000

        async def sleep() -> None:
            await asyncio.sleep(seconds)

        return sleep
    raise ValueError(f"unknown behaviour {spec!r}")


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


async def main() -> None:
    config: dict[str, Any] = json.loads(sys.stdin.read())
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        config["uri"], heartbeatFrequencyMS=500
    )
    db = client[config["db"]]
    monque = Monque(db, **config.get("options", {}))
    runs = db["interop_runs"]

    def register(name: str, act: Action) -> None:
        async def handler(job: Job[Any]) -> None:
            started = await runs.insert_one(
                {
                    "jobId": job.id,
                    "name": job.name,
                    "side": "py",
                    "pid": os.getpid(),
                    "instanceId": monque.instance_id,
                    "startedAt": datetime.now(timezone.utc),
                    "failCount": job.fail_count,
                }
            )
            outcome = "fail"
            try:
                await act()
                outcome = "ok"
            finally:
                await runs.update_one(
                    {"_id": started.inserted_id},
                    {"$set": {"endedAt": datetime.now(timezone.utc), "outcome": outcome}},
                )

        monque.worker(name, handler)

    for name, spec in config.get("behaviours", {}).items():
        register(name, behaviour(spec))

    monque.on(Events.JOB_START, lambda job: emit({"event": "job:start", "jobId": str(job.id)}))
    monque.on(
        Events.WORKER_STARTED,
        lambda: emit({"ready": True, "pid": os.getpid(), "instanceId": monque.instance_id}),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, monque.request_stop)
    try:
        await monque.run()
        emit({"stopped": True})
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
