"""A worker process with OpenTelemetry's SDK and a real exporter writing spans to a file:
``python -m tests.procs.traced_worker URI DB SPANS_FILE``. Runs ``traced-job`` until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from pymongo import AsyncMongoClient

from monque import Job, Monque


def one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


async def main(path: str) -> None:
    uri, db_name = sys.argv[1:3]
    with open(path, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - opened once, at start
        provider = TracerProvider(resource=Resource.create({"service.name": "traced-worker"}))
        provider.add_span_processor(
            SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=one_line))
        )
        trace.set_tracer_provider(provider)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        monque = Monque(client[db_name], poll_interval=0.2)

        @monque.worker("traced-job")
        async def handler(job: Job[Any]) -> None:
            with trace.get_tracer("the-worker").start_as_current_span("charge-card"):
                await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, monque.request_stop)
        monque.once("worker:started", lambda: print("ready", flush=True))
        await monque.run()
        await client.close()
        provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[3]))
