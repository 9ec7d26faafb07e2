"""Prometheus metrics: counters and histograms from events, the queue depth gauge, a scrape
over HTTP, and ``monque worker --metrics-port``."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from pymongo.database import Database

from monque import Events, Job, Monque
from monque.testing.server import free_port
from tests import cli_target
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually, wait_until
from tests.test_leases import _orphan

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import REGISTRY, CollectorRegistry  # noqa: E402

from monque.cli import cli  # noqa: E402
from monque.metrics import MonqueMetrics  # noqa: E402


def value(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    return registry.get_sample_value(sample, labels) or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def attached() -> Iterator[list[MonqueMetrics]]:
    made: list[MonqueMetrics] = []
    yield made
    for metrics in made:
        metrics.close()


async def test_counters_and_histograms_follow_the_jobs(
    make_monque: MakeMonque,
    handle: str,
    registry: CollectorRegistry,
    attached: list[MonqueMetrics],
    mongo_db: Database[dict[str, Any]],
) -> None:
    monque = make_monque(handle, max_retries=2)
    metrics = MonqueMetrics(monque, registry, depth_interval=60)
    attached.append(metrics)
    tries: dict[str, int] = {}

    @monque.worker("ok")
    async def ok(job: Job[Any]) -> None:
        pass

    @monque.worker("flaky")
    async def flaky(job: Job[Any]) -> None:
        tries["flaky"] = tries.get("flaky", 0) + 1
        if tries["flaky"] == 1:
            raise RuntimeError("first time")

    @monque.worker("broken")
    async def broken(job: Job[Any]) -> None:
        raise RuntimeError("always")

    now = datetime.now(timezone.utc)
    await monque.enqueue("ok")
    await monque.enqueue("ok", run_at=now - timedelta(seconds=30))  # 30 s late
    await monque.enqueue("flaky")
    failed = await monque.enqueue("broken")
    waiting = await monque.enqueue("ok", delay=3600)
    _orphan(mongo_db, "ok")  # a dead worker's: recovered, then run
    events = Recorder().listen(monque, Events.JOB_FAIL)
    await monque.start()

    await eventually(
        lambda: (
            value(registry, "monque_jobs_completed_total", name="ok") == 3
            and value(registry, "monque_jobs_completed_total", name="flaky") == 1
            and value(registry, "monque_jobs_failed_total", name="broken", retry="false") == 1
        ),
        message="all jobs settled",
    )
    await events.wait_for(Events.JOB_FAIL, 3)
    assert value(registry, "monque_jobs_started_total", name="ok") == 3
    assert value(registry, "monque_jobs_started_total", name="flaky") == 2
    assert value(registry, "monque_jobs_started_total", name="broken") == 2
    assert value(registry, "monque_jobs_failed_total", name="flaky", retry="true") == 1
    assert value(registry, "monque_jobs_failed_total", name="flaky", retry="false") == 0
    assert value(registry, "monque_jobs_failed_total", name="broken", retry="true") == 1
    assert value(registry, "monque_jobs_recovered_total", name="ok") == 1

    def count(outcome: str, name: str) -> float:
        return value(registry, "monque_job_duration_seconds_count", name=name, outcome=outcome)

    assert count("completed", "ok") == 3 and count("completed", "flaky") == 1
    assert count("failed", "flaky") == 1 and count("failed", "broken") == 2
    assert value(registry, "monque_job_duration_seconds_sum", name="ok", outcome="completed") >= 0

    # Lateness: the job due 30 s ago (and the orphan, due a minute ago) waited over 10 s.
    assert value(registry, "monque_job_lateness_seconds_count", name="ok") == 3
    late = value(registry, "monque_job_lateness_seconds_bucket", name="ok", le="10.0")
    assert late == 1, "only the job due now started within 10 s of its due time"
    assert value(registry, "monque_job_lateness_seconds_bucket", name="ok", le="120.0") == 3
    assert value(registry, "monque_job_lateness_seconds_sum", name="ok") >= 30 + 60

    # Management events of this engine count too.
    await monque.retry_job(failed.id)
    await monque.cancel_job(waiting.id)
    assert value(registry, "monque_jobs_retried_total", name="broken") == 1
    assert value(registry, "monque_jobs_cancelled_total", name="ok") == 1


async def test_queue_depth_is_one_snapshot_refreshed_in_the_background(
    make_monque: MakeMonque,
    handle: str,
    registry: CollectorRegistry,
    attached: list[MonqueMetrics],
    mongo_db: Database[dict[str, Any]],
) -> None:
    monque = make_monque(handle)
    for _ in range(3):
        await monque.enqueue("a", delay=3600)
    await monque.enqueue("b", delay=3600)
    aggregations: list[Any] = []
    real_run = type(monque.jobs).run

    async def counting_run(self: Any, operation: Any) -> Any:
        aggregations.append(operation)
        return await real_run(self, operation)

    metrics = MonqueMetrics(monque, registry, depth_interval=3600)
    attached.append(metrics)
    # The refresher (a thread on a sync handle, a task on the running loop on an async one)
    # reads the first snapshot at once, then sleeps for depth_interval. Refreshing here as
    # well would race it: its read could see the enqueue below (seen in CI).
    await eventually(lambda: metrics.depth, message="first snapshot")
    depth = "monque_queue_depth"
    assert value(registry, depth, name="a", status="pending") == 3
    assert value(registry, depth, name="b", status="pending") == 1
    assert value(registry, depth, name="a", status="completed") == 0, "every status shows"
    refreshed = registry.get_sample_value("monque_queue_depth_refreshed_timestamp_seconds")
    assert refreshed is not None and refreshed > 0

    # A scrape serves the snapshot; it never reads the database.
    await monque.enqueue("a", delay=3600)
    with mock.patch.object(type(monque.jobs), "run", counting_run):
        for _ in range(5):
            assert value(registry, depth, name="a", status="pending") == 3
    assert aggregations == []
    counts = await metrics.refresh()
    assert counts == {"a": {"pending": 4}, "b": {"pending": 1}}
    assert value(registry, depth, name="a", status="pending") == 4

    # A name whose jobs are all gone reads 0 rather than vanishing.
    mongo_db.monque_jobs.delete_many({"name": "b"})
    await metrics.refresh()
    assert registry.get_sample_value(depth, {"name": "b", "status": "pending"}) == 0


async def test_an_older_depth_read_never_replaces_a_newer_snapshot(
    make_monque: MakeMonque, registry: CollectorRegistry, attached: list[MonqueMetrics]
) -> None:
    monque = make_monque("async")
    await monque.enqueue("a", delay=3600)
    metrics = MonqueMetrics(monque, registry, depth_interval=3600)
    attached.append(metrics)
    await eventually(lambda: metrics.depth, message="first snapshot")
    real_run = type(monque.jobs).run
    first_read = asyncio.Event()
    release = asyncio.Event()

    async def slow_first_read(self: Any, operation: Any) -> Any:
        result = await real_run(self, operation)
        if not first_read.is_set():  # the first read saw one job; its answer comes back late
            first_read.set()
            await release.wait()
        return result

    with mock.patch.object(type(monque.jobs), "run", slow_first_read):
        older = asyncio.create_task(metrics.refresh())
        await first_read.wait()
        await monque.enqueue("a", delay=3600)
        assert await metrics.refresh() == {"a": {"pending": 2}}
        release.set()
        assert await older == {"a": {"pending": 1}}
    assert metrics.depth == {"a": {"pending": 2}}, "the newer read's snapshot stays"
    assert value(registry, "monque_queue_depth", name="a", status="pending") == 2


async def test_the_async_refresher_runs_on_the_engines_loop(
    make_monque: MakeMonque, registry: CollectorRegistry, attached: list[MonqueMetrics]
) -> None:
    monque = make_monque("async")
    await monque.enqueue("a", delay=3600)
    metrics = MonqueMetrics(monque, registry, depth_interval=0.05)  # built in a running loop
    attached.append(metrics)
    await eventually(lambda: value(registry, "monque_queue_depth", name="a", status="pending") == 1)
    await monque.enqueue("a", delay=3600)
    await eventually(
        lambda: value(registry, "monque_queue_depth", name="a", status="pending") == 2,
        message="a later refresh",
    )
    metrics.close()
    await eventually(lambda: metrics._task is not None and metrics._task.done())


def test_close_unsubscribes_stops_and_unregisters(
    mongo_db: Database[dict[str, Any]], registry: CollectorRegistry
) -> None:
    monque = Monque(mongo_db)
    metrics = MonqueMetrics(monque, registry)
    assert monque.listener_count(Events.JOB_COMPLETE) == 1
    wait_until(lambda: metrics._thread is not None and metrics._refreshed_at is not None)
    metrics.close()
    metrics.close()  # idempotent
    assert monque.listener_count(Events.JOB_COMPLETE) == 0
    assert metrics._thread is not None and not metrics._thread.is_alive()
    assert registry.get_sample_value("monque_queue_depth_refreshed_timestamp_seconds") is None
    again = MonqueMetrics(monque, registry)  # the names are free again
    again.close()
    with pytest.raises(ValueError, match="depth_interval"):
        MonqueMetrics(monque, registry, depth_interval=0)


def test_without_prometheus_client_the_import_says_what_to_install() -> None:
    saved = sys.modules.pop("monque.metrics")
    try:
        with (
            mock.patch.dict(sys.modules, {"prometheus_client": None}),
            pytest.raises(ImportError, match=r"pip install 'monque-py\[prometheus\]'"),
        ):
            importlib.import_module("monque.metrics")
    finally:
        sys.modules["monque.metrics"] = saved


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
        return text


async def test_a_scrape_over_http(
    make_monque: MakeMonque, registry: CollectorRegistry, attached: list[MonqueMetrics]
) -> None:
    monque = make_monque("sync")
    metrics = MonqueMetrics(monque, registry, depth_interval=3600)
    attached.append(metrics)
    monque.worker("x", lambda job: None)
    await monque.enqueue("x")
    await monque.enqueue("x")
    await monque.enqueue('y<"odd">', delay=3600)
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        await monque.start()
        await eventually(lambda: value(registry, "monque_jobs_completed_total", name="x") == 2)
        await metrics.refresh()
        text = await asyncio.to_thread(_scrape, port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    lines = text.splitlines()
    assert 'monque_jobs_completed_total{name="x"} 2.0' in lines
    assert 'monque_jobs_started_total{name="x"} 2.0' in lines
    assert 'monque_queue_depth{name="x",status="completed"} 2.0' in lines
    assert 'monque_queue_depth{name="y<\\"odd\\">",status="pending"} 1.0' in lines
    assert "# TYPE monque_job_duration_seconds histogram" in lines
    assert "# TYPE monque_queue_depth gauge" in lines
    assert 'monque_job_lateness_seconds_bucket{le="+Inf",name="x"} 2.0' in lines


# -- monque worker --metrics-port ----------------------------------------------------------


def _in_thread(args: list[str]) -> tuple[threading.Thread, list[Result]]:
    results: list[Result] = []
    runner = CliRunner(env={"MONGODB_URI": None, "MONQUE_DB": None})
    thread = threading.Thread(target=lambda: results.append(runner.invoke(cli, args)), daemon=True)
    thread.start()
    return thread, results


def test_worker_metrics_port_serves_the_workers_metrics(
    mongo_db: Database[dict[str, Any]],
) -> None:
    monque = Monque(mongo_db, poll_interval=0.05)
    done: list[str] = []
    monque.worker("cli-metrics", lambda job: done.append(str(job.id)))
    monque.enqueue_sync("cli-metrics")
    monque.enqueue_sync("cli-metrics", delay=3600)
    cli_target.shared = monque
    port = free_port()
    thread, results = _in_thread(["worker", "tests.cli_target:shared", "--metrics-port", str(port)])
    scraped: list[str] = []
    try:
        wait_until(lambda: done or results)
        wait_until(lambda: monque.is_running or results)

        def complete() -> bool:
            scraped[:] = [_scrape(port)]
            lines = scraped[0].splitlines()
            return (
                'monque_jobs_completed_total{name="cli-metrics"} 1.0' in lines
                # The first snapshot, read as the worker started: 2 or 1 pending.
                and any(
                    line.startswith('monque_queue_depth{name="cli-metrics",status="pending"} ')
                    for line in lines
                )
            )

        wait_until(lambda: results or complete())
    finally:
        wait_until(lambda: monque.is_running or results)
        monque.request_stop()
        thread.join(30)
    assert results[0].exit_code == 0, results[0].output
    assert f"metrics at http://127.0.0.1:{port}/metrics" in results[0].stderr
    assert "process_cpu_seconds_total" in scraped[0] or sys.platform != "linux"
    # Stopped: the server is closed and the collector left the default registry.
    with pytest.raises(urllib.error.URLError):
        _scrape(port)
    assert REGISTRY.get_sample_value("monque_queue_depth_refreshed_timestamp_seconds") is None
    assert monque.listener_count(Events.JOB_START) == 0


def test_worker_metrics_port_errors(mongo_db: Database[dict[str, Any]]) -> None:
    cli_target.shared = Monque(mongo_db)
    cli_target.shared.worker("x", lambda job: None)
    runner = CliRunner(env={"MONGODB_URI": None, "MONQUE_DB": None})
    with mock.patch.dict(sys.modules, {"prometheus_client": None}):
        missing = runner.invoke(cli, ["worker", "tests.cli_target:shared", "--metrics-port", "1"])
    assert missing.exit_code == 1
    assert "--metrics-port needs prometheus_client" in missing.output
    assert "pip install 'monque-py[prometheus]'" in missing.output

    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
    try:
        taken = runner.invoke(
            cli, ["worker", "tests.cli_target:shared", "--metrics-port", str(port)]
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert taken.exit_code == 2, taken.output
    assert f"cannot serve metrics on 127.0.0.1:{port}" in taken.output
    assert "Traceback" not in taken.output
