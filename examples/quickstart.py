"""Monque quickstart: workers, a burst of jobs, de-duplication, retries with backoff, cron.

Runs against $MONGODB_URI, or starts the embedded test server when it is unset.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import ExitStack
from typing import Any

from pymongo import AsyncMongoClient

from monque import Events, Job, Monque
from monque.testing import EmbeddedMongo


async def demo(uri: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    await client.drop_database("monque_quickstart")
    # A short backoff and fast polling so the demo's retry happens within seconds.
    monque = Monque(client, database="monque_quickstart", backoff_base=0.5, poll_interval=0.2)
    done = asyncio.Event()
    completed: list[str] = []
    attempts: dict[str, int] = {}

    @monque.worker("send-email", concurrency=3)
    async def send_email(job: Job[dict[str, str]]) -> None:
        await asyncio.sleep(0.05)
        print(f"  sent email to {job.data['to']}")

    @monque.worker("resize-image")
    def resize_image(job: Job[dict[str, int]]) -> None:  # plain def: runs on a thread
        time.sleep(0.02)
        print(f"  resized image {job.data['id']} (sync handler, off the event loop)")

    @monque.worker("flaky")
    async def flaky(job: Job[None]) -> None:
        attempts["flaky"] = attempts.get("flaky", 0) + 1
        if attempts["flaky"] < 3:
            raise RuntimeError(f"flaky failure #{attempts['flaky']}")
        print(f"  flaky job succeeded on attempt {attempts['flaky']}")

    @monque.worker("heartbeat-report")
    async def report(job: Job[None]) -> None:
        print("  cron job fired: heartbeat-report")

    def on_complete(job: Job[Any], duration: float) -> None:
        completed.append(job.name)
        if "flaky" in completed and "heartbeat-report" in completed:
            done.set()

    def on_fail(job: Job[Any], error: Exception, will_retry: bool) -> None:
        print(f"  {job.name} failed ({error}); retry at {job.next_run_at:%H:%M:%S.%f}"[:-3])

    monque.on(Events.JOB_COMPLETE, on_complete)
    monque.on(Events.JOB_FAIL, on_fail)

    print("1. enqueue a burst of jobs")
    for i in range(5):
        await monque.enqueue("send-email", {"to": f"user{i}@example.com"})
        await monque.enqueue("resize-image", {"id": i})

    print("2. unique keys de-duplicate")
    first = await monque.enqueue("send-email", {"to": "ceo@example.com"}, unique_key="welcome-ceo")
    again = await monque.enqueue("send-email", {"to": "ceo@example.com"}, unique_key="welcome-ceo")
    print(
        f"  first created={first.created}, second created={again.created}, same id: "
        f"{first.id == again.id}"
    )

    print("3. a failing job retried with exponential backoff (backoff_base=0.5s)")
    await monque.now("flaky")

    print("4. a cron job every 10 seconds (6 fields: seconds first) and start the workers")
    cron = await monque.schedule("*/10 * * * * *", "heartbeat-report")
    await monque.start()
    print(
        f"   waiting for the retries and the cron job (next at {cron.next_run_at:%H:%M:%S} UTC);"
        " Ctrl-C stops"
    )

    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        await monque.stop()
        await client.drop_database("monque_quickstart")
        await client.close()
    print(f"done: {len(completed)} jobs completed; stopped gracefully")


def main() -> None:
    try:
        with ExitStack() as stack:
            uri = os.environ.get("MONGODB_URI")
            if not uri:
                print(
                    "MONGODB_URI unset: starting the embedded test server (use a real mongod "
                    "in production)"
                )
                uri = stack.enter_context(EmbeddedMongo()).uri
            asyncio.run(demo(uri))
    except KeyboardInterrupt:
        # asyncio.run cancelled the demo, whose ``finally`` stopped the workers; the test
        # server (if any) was stopped on the way out.
        print("\ninterrupted: workers stopped")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
