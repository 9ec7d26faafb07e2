"""``monque worker`` (connection options, container errors, logging, Ctrl-C) and
``monque dev-server``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from dependency_injector import containers, providers
from pymongo import MongoClient
from pymongo.database import Database

from monque import Monque
from monque.cli import cli
from monque.testing.server import free_port
from monque_di import MonqueContainer
from tests import cli_target
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _explode() -> None:
    raise RuntimeError("no [/x] broker configured")


class BrokenContainer(containers.DeclarativeContainer):
    """An app container whose own resource fails while the worker starts."""

    __self__ = providers.Self()
    config = providers.Configuration()
    broker = providers.Resource(_explode)
    monque = providers.Container(MonqueContainer, config=config.monque, app=__self__)


def _in_thread(args: list[str]) -> tuple[threading.Thread, list[Result]]:
    results: list[Result] = []
    runner = CliRunner(env={"MONGODB_URI": None, "MONQUE_DB": None})
    thread = threading.Thread(target=lambda: results.append(runner.invoke(cli, args)), daemon=True)
    thread.start()
    return thread, results


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if not line.startswith("hint: ")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- 9. connection options, container errors, logging, signals -----------------------------


def test_uri_and_db_are_refused_for_a_monque_target(
    mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    cli_target.shared = Monque(mongo_db)
    runner = CliRunner(env={"MONGODB_URI": None, "MONQUE_DB": None})
    for args in (
        ["--uri", mongodb_uri, "worker", "tests.cli_target:make_monque"],
        ["worker", "tests.cli_target:shared", "--db", "other"],
    ):
        refused = runner.invoke(cli, args)
        assert refused.exit_code == 2, refused.output
        assert "cannot apply to tests.cli_target:" in _one_error_line(refused)


def test_a_container_gets_its_connection_and_database_from_the_cli(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    from tests.di_app.container import AppContainer

    container = AppContainer()  # no connection, no database: the CLI gives both
    container.config.from_dict({"monque": {"poll_interval": 0.05}})
    cli_target.container = container
    Monque(mongo_db).enqueue_sync("send-email", {"to": "uri@example.com"})
    engines: list[Monque] = []
    real_run = Monque.run

    async def spy_run(self: Monque, **kwargs: Any) -> None:
        engines.append(self)
        await real_run(self, **kwargs)

    with mock.patch.object(Monque, "run", spy_run):
        thread, results = _in_thread(
            ["worker", "tests.cli_target:container", "--uri", mongodb_uri, "--db", mongo_db_name]
        )
        try:
            wait_until(lambda: container.mailer().sent or results)
        finally:
            if engines:
                wait_until(lambda: engines[0].is_running or results)
                engines[0].request_stop()
            thread.join(30)
    assert results[0].exit_code == 0, results[0].output
    assert container.mailer().sent == ["uri@example.com"]
    assert engines[0].database.name == mongo_db_name


def test_container_errors_are_one_line_with_a_hint(mongodb_uri: str) -> None:
    runner = CliRunner(env={"MONGODB_URI": None, "MONQUE_DB": None})
    no_connection = runner.invoke(cli, ["worker", "tests.di_app.container:AppContainer"])
    assert no_connection.exit_code == 1
    assert "connection" in _one_error_line(no_connection)

    broken = runner.invoke(
        cli, ["worker", "tests.test_cli_worker:BrokenContainer", "--uri", mongodb_uri]
    )
    assert broken.exit_code == 1
    line = _one_error_line(broken)
    assert line.startswith("error: the container could not be built: ")
    assert "hint: " in broken.output

    bad_uri = runner.invoke(
        cli, ["worker", "tests.di_app.container:AppContainer", "--uri", "localhost"]
    )
    assert bad_uri.exit_code == 2 and "invalid --uri" in _one_error_line(bad_uri)


def _run_worker(monque: Monque, extra: list[str], until: Callable[[], object]) -> Result:
    cli_target.shared = monque
    thread, results = _in_thread(["worker", "tests.cli_target:shared", *extra])
    try:
        wait_until(lambda: until() or results)
    finally:
        wait_until(lambda: monque.is_running or results)
        monque.request_stop()
        thread.join(30)
    return results[0]


def test_worker_logs_text_and_json_lines(mongo_db: Database[dict[str, Any]]) -> None:
    monque = Monque(mongo_db, poll_interval=0.05)
    done: list[str] = []
    monque.worker("report[/x]", lambda job: done.append(str(job.id)))

    first = monque.enqueue_sync("report[/x]")
    text = _run_worker(monque, [], lambda: done)
    assert text.exit_code == 0, text.output
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.search(rf"^{stamp} INFO monque\.cli: monque worker ", text.stderr, re.M)
    assert re.search(
        rf"^{stamp} INFO monque\.worker\.jobs: report\[/x\] {first.id} completed in ",
        text.stderr,
        re.M,
    ), text.stderr

    second = monque.enqueue_sync("report[/x]")
    as_json = _run_worker(monque, ["--log-json"], lambda: len(done) > 1)
    assert as_json.exit_code == 0, as_json.output
    records = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["time"].endswith("+00:00") for r in records)
    [completed] = [r for r in records if r.get("job_id") == str(second.id) and "duration" in r]
    assert completed["job_name"] == "report[/x]" and completed["logger"] == "monque.worker.jobs"
    assert isinstance(completed["duration"], float) and completed["level"] == "INFO"
    assert records[-1]["message"] == "monque worker stopped"

    quiet = _run_worker(monque, ["-q"], lambda: True)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    both = CliRunner().invoke(cli, ["worker", "tests.cli_target:shared", "-v", "-q"])
    assert both.exit_code == 2 and "pick one" in both.output


SLOW_APP = """
    import os
    import time

    from pymongo import MongoClient

    from monque import Monque

    client = MongoClient(os.environ["MONGODB_URI"])
    monque = Monque(client, database=os.environ["MONQUE_DB"], poll_interval=0.05)


    @monque.worker("slow")
    def slow(job):
        while not job.should_stop:
            time.sleep(0.02)
"""


class _Lines:
    """A child's stderr, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        self.thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self.thread.start()

    def wait_for(self, fragment: str) -> None:
        wait_until(lambda: any(fragment in line for line in self.lines), timeout=20)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_ctrl_c_stops_gracefully_then_at_once_without_a_traceback(
    tmp_path: Path, mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    (tmp_path / "slowapp.py").write_text(textwrap.dedent(SLOW_APP))
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "MONQUE_DB": mongo_db_name,
        "PYTHONPATH": str(ROOT),
    }
    job = Monque(mongo_db).enqueue_sync("slow")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monque.cli", "worker", "slowapp:monque"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = _Lines(proc)
    try:
        err.wait_for(f"slow {job.id} started")
        proc.send_signal(signal.SIGINT)
        err.wait_for("stopping: waiting up to")
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    finally:
        proc.kill()
        proc.wait()
        err.thread.join(5)
    assert proc.returncode == 0, err.text
    assert "stopping now" in err.text and "monque worker stopped" in err.text
    assert "Traceback" not in err.text and "KeyboardInterrupt" not in err.text
    assert (mongo_db.monque_jobs.find_one({"_id": job.id}) or {})["status"] == "pending"


# -- 10. dev-server -------------------------------------------------------------------------


def test_dev_server_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monque.cli",
            "dev-server",
            "--port",
            str(port),
            "--data",
            str(data),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        uri = ""
        for line in proc.stdout:
            if line.startswith("URI: "):
                uri = line.removeprefix("URI: ").strip()
                break
        assert uri == f"mongodb://127.0.0.1:{port}/?directConnection=true"
        client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=3000)
        try:
            assert client.admin.command("ping")["ok"] == 1
            client.app.things.insert_one({"kept": True})
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    assert "dev server stopped" in stderr and "Traceback" not in stderr
    assert any(data.iterdir())
    with socket.socket() as sock:  # the server is gone: nothing listens any more
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_dev_server_without_secantus_or_with_its_port_taken(tmp_path: Path) -> None:
    runner = CliRunner()
    with mock.patch("monque.cli.devserver.secantus_installed", return_value=False):
        missing = runner.invoke(cli, ["dev-server", "--data", str(tmp_path)])
    assert missing.exit_code == 1
    assert "pip install 'monque-py[embedded]'" in _one_error_line(missing)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = runner.invoke(cli, ["dev-server", "--port", str(busy.getsockname()[1])])
    assert taken.exit_code == 1 and "is in use" in _one_error_line(taken)


@pytest.fixture(autouse=True)
def _no_leftover_targets() -> Iterator[None]:
    yield
    cli_target.shared = None
    cli_target.container = None


def test_dev_server_in_process_stops_on_a_signal(tmp_path: Path) -> None:
    """The same run inside the test process (its lines count for coverage); the signal is
    sent once the server answers, so the command's own handler is installed by then."""
    port = free_port()
    seen: list[str] = []

    def use_then_interrupt() -> None:
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=20_000
        )
        try:
            client.app.things.insert_one({"kept": True})
            seen.append("written")
        finally:
            client.close()
        # Only once the server answered (a failed start ends the command by itself): a signal
        # with no handler of the command's installed would interrupt the test session.
        os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=use_then_interrupt, daemon=True)
    helper.start()
    result = CliRunner().invoke(
        cli, ["dev-server", "--port", str(port), "--data", str(tmp_path / "data")]
    )
    helper.join(10)
    assert result.exit_code == 0, result.output
    assert seen == ["written"]
    assert f"URI: mongodb://127.0.0.1:{port}/?directConnection=true" in result.output
    assert "dev server stopped" in result.output
