"""OpenTelemetry: a span per enqueue and per run, one trace from the request to the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pymongo.database import Database

from monque import Events, Job, tracing
from tests.conftest import MakeMonque
from tests.helpers import Recorder

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
