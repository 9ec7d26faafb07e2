"""OpenTelemetry traces (``pip install 'monque-py[otel]'``): a span per enqueue and per run.

Off, at no cost, unless the OpenTelemetry API is installed and the application configured a
tracer provider. When on, ``enqueue`` runs in a ``monque.enqueue <name>`` span (PRODUCER) and
stores that span's context on the job (``traceContext``: the W3C ``traceparent`` and
``tracestate`` headers); a worker runs the handler in a ``monque.run <name>`` span (CONSUMER)
whose parent is that context, so a request that enqueued a job and the job's run share one
trace, whichever process runs it. Recurring jobs carry no context (each run is a trace of its
own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the extra is installed in development
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from monque.job import Job

__all__ = ["FIELD", "carrier", "enabled", "enqueue_span", "run_span"]

FIELD = "traceContext"
_NAME = "monque"


def _provider() -> Any:
    return trace.get_tracer_provider() if trace is not None else None


def enabled() -> bool:
    """The API is installed and a real tracer provider is set (not the default proxy)."""
    provider = _provider()
    return provider is not None and not isinstance(
        provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


def carrier() -> dict[str, str] | None:
    """The current span's context as W3C headers, to store on a job; None when off."""
    if not enabled():
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


@contextlib.contextmanager
def enqueue_span(name: str, count: int = 1) -> Iterator[None]:
    if not enabled():
        yield
        return
    tracer = _provider().get_tracer(_NAME)
    attributes: dict[str, str | int] = {
        "messaging.system": "monque",
        "messaging.destination.name": name,
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with tracer.start_as_current_span(
        f"monque.enqueue {name}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield


@contextlib.contextmanager
def run_span(job: Job[Any], context: Any) -> Iterator[Any]:
    """A span for one run of ``job``, continuing the context stored at enqueue. Yields the
    span (None when off) for ``finish``."""
    if not enabled():
        yield None
        return
    parent = propagate.extract(context) if isinstance(context, dict) else None
    tracer = _provider().get_tracer(_NAME)
    with tracer.start_as_current_span(
        f"monque.run {job.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "monque",
            "messaging.destination.name": job.name,
            "messaging.message.id": str(job.id),
            "monque.job.attempt": job.fail_count + 1,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def finish(span: Any, outcome: str, error: BaseException | None = None) -> None:
    """Record how the run ended on its span (``completed``, ``failed``, ``cancelled``...)."""
    if span is None:
        return
    span.set_attribute("monque.job.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
