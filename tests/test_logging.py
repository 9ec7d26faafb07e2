"""Workers say what happened: one line per job event, failures with their traceback, and a
database outage told once with its end; the library never configures logging itself."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from pymongo import MongoClient

from monque import Events, Job
from monque.errors import brief
from monque.testing import fail_command
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

TOPOLOGY_ERROR = (
    "db.example:27017: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: "
    "20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 30s, Topology Description: "
    "<TopologyDescription id: 6b0, topology_type: Unknown, servers: [<ServerDescription "
    "('db.example', 27017) server_type: Unknown, rtt: None, error=AutoReconnect('x')>]>"
)


def test_a_driver_error_in_one_line_without_its_topology() -> None:
    assert brief(Exception(TOPOLOGY_ERROR)) == (
        "db.example:27017: [Errno 111] Connection refused, Timeout: 30s"
    )
    assert brief(TimeoutError()) == "TimeoutError"


def test_importing_monque_configures_no_logging() -> None:
    code = (
        "import logging, monque, monque.worker.runtime;"
        "root = logging.getLogger();"
        "mine = logging.getLogger('monque').handlers;"
        "print(len(root.handlers), [type(h).__name__ for h in mine])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("[")[0].strip() == "0"
    assert "StreamHandler" not in out.stdout


async def test_one_line_per_job_event_and_the_traceback_of_a_failure(
    make_monque: MakeMonque, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monque")
    monque = make_monque(max_retries=2)
    events = Recorder().listen(monque, Events.JOB_COMPLETE, Events.JOB_FAIL)

    def send(job: Job[Any]) -> None:
        if job.data == "bad":
            mailer.send(job.data)  # type: ignore[name-defined]  # noqa: F821

    monque.worker("send-email", send)
    ok = await monque.now("send-email", "good")
    bad = await monque.now("send-email", "bad")
    await monque.start()
    await events.wait_for(Events.JOB_COMPLETE)
    await events.wait_for(Events.JOB_FAIL, 2, timeout=10)
    await monque.stop()
    records = [r for r in caplog.records if r.name == "monque.worker.jobs"]
    lines = [(r.levelname, r.getMessage()) for r in records]
    assert ("INFO", f"send-email {ok.id} started") in lines
    done = [r for r in records if "completed in" in r.getMessage()]
    assert len(done) == 1 and done[0].job_id == str(ok.id) and done[0].duration >= 0  # type: ignore[attr-defined]
    failures = [r for r in records if r.levelname == "WARNING" and str(bad.id) in r.getMessage()]
    assert len(failures) == 2
    first, last = failures
    assert "NameError: name 'mailer' is not defined; retry at" in first.getMessage()
    assert "failed for good after 2 attempt(s)" in last.getMessage()
    assert first.exc_info is not None and first.exc_info[0] is NameError
    text = caplog.text
    assert "Traceback (most recent call last)" in text and "mailer.send(job.data)" in text
    assert first.job_name == "send-email"  # type: ignore[attr-defined]


async def test_a_database_outage_is_logged_once_with_its_end(
    make_monque: MakeMonque,
    mongo_client: MongoClient[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="monque.worker.database")
    monque = make_monque(handle="sync", worker_concurrency=1)
    errors = Recorder().listen(monque, Events.JOB_ERROR, Events.JOB_COMPLETE)
    monque.worker("work", lambda job: None)
    await monque.jobs.call_count({})
    with fail_command(mongo_client, ["findAndModify"], times=3, error_code=6, error_labels=[]):
        await monque.start()
        await errors.wait_for(Events.JOB_ERROR, 3)
    await monque.now("work")
    await errors.wait_for(Events.JOB_COMPLETE)

    def told(level: str, text: str) -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "monque.worker.database" and r.levelname == level and text in r.message
        ]

    await eventually(lambda: told("INFO", "reachable again"), message="the end of the outage")
    assert len(told("WARNING", "database trouble: claiming jobs failed")) == 1
    assert len(told("DEBUG", "still failing")) >= 2
    assert all("Topology Description" not in r.message for r in caplog.records)


def test_a_forced_stop_says_so() -> None:
    from monque.errors import ShutdownTimeoutError

    assert "at a forced stop" in str(ShutdownTimeoutError(30, ["a", "b"], forced=True))
    assert "after 30s" in str(ShutdownTimeoutError(30, ["a"]))


def test_the_dev_server_port_check_looks_for_a_listener() -> None:
    """A bind test also refused the TIME_WAIT sockets a just-stopped server leaves behind."""
    import socket

    from monque.cli.devserver import port_in_use
    from monque.testing import free_port

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its socket stays in TIME_WAIT
        client.close()
    assert not port_in_use(port), "a stopped server's TIME_WAIT is not a listener"
    assert not port_in_use(free_port())
