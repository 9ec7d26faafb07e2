"""OpenTelemetry: a span per enqueue and per run, one trace from the request to the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pymongo.database import Database

from monque import Events, Job, Monque, tracing
from tests.conftest import MakeMonque
from tests.helpers import Recorder, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A configured tracer provider for this test only (the global one stays unset)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", lambda: provider)
    yield exporter
    provider.shutdown()


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


async def test_no_provider_no_context_and_no_spans(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    assert not tracing.enabled()
    job = await make_monque().enqueue("plain")
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and "traceContext" not in doc


@pytest.mark.parametrize("handle", ["async", "sync"])
async def test_a_request_and_the_job_it_enqueued_share_one_trace(
    make_monque: MakeMonque,
    mongo_db: Database[dict[str, Any]],
    spans: InMemorySpanExporter,
    handle: str,
) -> None:
    producer = make_monque(handle=handle)
    tracer = tracing._provider().get_tracer("the-app")
    with tracer.start_as_current_span("POST /signup") as request:
        job = await producer.enqueue("send-email", {"to": "a@example.com"})
    doc = mongo_db.monque_jobs.find_one({"_id": job.id})
    assert doc is not None and set(doc["traceContext"]) >= {"traceparent"}

    worker = make_monque(handle=handle)
    events = Recorder().listen(worker, Events.JOB_COMPLETE)

    def send(job: Job[Any]) -> None:  # a sync handler on its own thread
        with tracer.start_as_current_span("smtp.send"):
            pass

    worker.worker("send-email", send)
    await worker.start()
    await events.wait_for(Events.JOB_COMPLETE)
    await worker.stop()

    trace_id = request.get_span_context().trace_id
    enqueue = _one(spans, "monque.enqueue send-email")
    run = _one(spans, "monque.run send-email")
    inner = _one(spans, "smtp.send")
    assert enqueue.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert (
        enqueue.parent is not None and enqueue.parent.span_id == request.get_span_context().span_id
    )
    assert run.parent is not None and run.parent.span_id == enqueue.context.span_id
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id
    assert {s.context.trace_id for s in (enqueue, run, inner)} == {trace_id}
    assert run.attributes is not None
    assert run.attributes["messaging.message.id"] == str(job.id)
    assert run.attributes["monque.job.outcome"] == "completed"
    assert run.attributes["monque.job.attempt"] == 1


async def test_a_failed_run_records_its_error(
    make_monque: MakeMonque, spans: InMemorySpanExporter
) -> None:
    monque = make_monque(max_retries=1)
    events = Recorder().listen(monque, Events.JOB_FAIL)

    async def broken(job: Job[Any]) -> None:
        raise KeyError("missing")

    monque.worker("broken", broken)
    await monque.now("broken")
    await monque.start()
    await events.wait_for(Events.JOB_FAIL)
    await monque.stop()
    run = _one(spans, "monque.run broken")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None and run.attributes["monque.job.outcome"] == "failed"
    assert any(e.name == "exception" for e in run.events)


async def test_a_malformed_trace_context_never_refuses_a_job(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], spans: InMemorySpanExporter
) -> None:
    monque = make_monque()
    job = await monque.enqueue("odd")
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"traceContext": "garbage"}})
    events = Recorder().listen(monque, Events.JOB_COMPLETE)
    monque.worker("odd", lambda job: None)
    await monque.start()
    await events.wait_for(Events.JOB_COMPLETE)
    await monque.stop()
    run = _one(spans, "monque.run odd")
    assert run.parent is None, "a fresh trace"


def test_the_trace_continues_in_another_process_with_a_real_exporter(
    mongo_db: Database[dict[str, Any]],
    mongodb_uri: str,
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    """The request's process enqueues inside a span; a worker process with the SDK and a
    file exporter runs the job: its spans join the request's trace."""
    producer = Monque(mongo_db)
    tracer = tracing._provider().get_tracer("the-app")
    with tracer.start_as_current_span("POST /checkout") as request:
        job = producer.enqueue_sync("traced-job", {"cart": 7})
    out = tmp_path / "spans.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.traced_worker", mongodb_uri, mongo_db.name, str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: (
                (mongo_db.monque_jobs.find_one({"_id": job.id}) or {}).get("status") == "completed"
            ),
            timeout=30,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    exported = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by_name = {s["name"]: s for s in exported}
    run, inner = by_name["monque.run traced-job"], by_name["charge-card"]
    enqueue = _one(spans, "monque.enqueue traced-job")
    trace_id = f"0x{request.get_span_context().trace_id:032x}"
    assert run["context"]["trace_id"] == trace_id == inner["context"]["trace_id"]
    assert run["parent_id"] == f"0x{enqueue.context.span_id:016x}"
    assert inner["parent_id"] == run["context"]["span_id"]
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"]["monque.job.outcome"] == "completed"
    assert run["resource"]["attributes"]["service.name"] == "traced-worker"
