"""The real ``monque`` CLI against the test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner
from dependency_injector import providers
from pymongo.database import Database

from monque import Monque, MonqueError, WorkerRegistrationError
from monque.cli import cli
from tests import cli_target
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, ["--uri", mongodb_uri, "--db", mongo_db_name, *args])

    return invoke


def test_enqueue_list_show_and_stats(run: Any, mongo_db: Database[dict[str, Any]]) -> None:
    result = run("--json", "enqueue", "report", "--data", '{"n": 1}', "--unique-key", "r1")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["created"] is True and created["data"] == {"n": 1}
    again = json.loads(run("--json", "enqueue", "report", "--unique-key", "r1").output)
    assert again["created"] is False and again["id"] == created["id"]
    run("enqueue", "report", "--delay", "60", "--priority", "5")

    listed = json.loads(run("--json", "jobs", "list", "--limit", "1").output)
    assert len(listed["jobs"]) == 1 and listed["next_cursor"]
    rest = json.loads(run("--json", "jobs", "list", "--cursor", listed["next_cursor"]).output)
    assert [j["id"] for j in rest["jobs"]] == [created["id"]]
    table = run("jobs", "list", "--status", "pending")
    assert table.exit_code == 0 and "report" in table.output

    shown = run("jobs", "show", created["id"])
    assert shown.exit_code == 0 and created["id"] in shown.output
    stats = json.loads(run("--json", "stats").output)
    assert stats["counts"] == {
        "pending": 2,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert stats["total"] == 2
    assert "pending" in run("stats", "--name", "report").output


def test_retry_cancel_delete(run: Any, mongo_db: Database[dict[str, Any]]) -> None:
    job_id = json.loads(run("--json", "enqueue", "x").output)["id"]
    assert json.loads(run("--json", "jobs", "cancel", job_id).output)["status"] == "cancelled"
    assert json.loads(run("--json", "jobs", "retry", job_id).output)["status"] == "pending"
    refused = run("jobs", "delete", "0" * 24)
    assert (
        refused.exit_code == 1 and "no job" in refused.output and "Traceback" not in refused.output
    )
    run("jobs", "cancel", job_id)
    assert run("jobs", "delete", job_id).exit_code == 0
    assert mongo_db.monque_jobs.count_documents({}) == 0


def test_schedules_show_the_next_run_in_their_zone(
    run: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    Monque(mongo_db).schedule_sync("0 9 * * *", "digest", timezone="Asia/Tokyo")
    listed = json.loads(run("--json", "schedules").output)
    assert [s["name"] for s in listed] == ["digest"]
    table = run("schedules").output
    assert "Asia/Tokyo" in table and "09:00:00" in table


def test_errors_are_one_line_with_a_nonzero_exit(run: Any) -> None:
    for args, fragment in [
        (("enqueue", " bad"), "job name"),
        (("enqueue", "x", "--data", "{nope"), "not JSON"),
        (("jobs", "show", "zzz"), "job id"),
        (("jobs", "retry", "0" * 24), "no job"),
        (("worker", "nomodule:thing"), "cannot import"),
        (("worker", "tests.cli_target"), "module:attribute"),
        (("worker", "tests.cli_target:missing"), "no attribute"),
        (("worker", "tests.cli_target:os"), "Monque"),
    ]:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert fragment in result.output and "Traceback" not in result.output
    no_uri = CliRunner(env={"MONGODB_URI": ""}).invoke(cli, ["stats"])
    assert no_uri.exit_code == 2 and "--uri" in no_uri.output


def test_worker_runs_until_sigterm(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = Monque(mongo_db)
    first = monque.enqueue_sync("cli-job")
    excluded = monque.enqueue_sync("other-job")
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "MONQUE_DB": mongo_db_name,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monque.cli",
            "worker",
            "tests.cli_target:make_monque",
            "--names",
            "cli-job",
            "--concurrency",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: mongo_db.done.count_documents({"job": first.id}), timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert b"monque worker stopped" in stderr
    assert (mongo_db.monque_jobs.find_one({"_id": excluded.id}) or {})["status"] == "pending"


def _run_worker_in_thread(args: list[str]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(cli, args)), daemon=True
    )
    thread.start()
    return thread, results


def test_worker_command_on_a_monque_instance(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = Monque(mongo_db, poll_interval=0.05)
    ran: list[str] = []
    monque.worker("a", lambda job: ran.append("a"))
    monque.worker("b", lambda job: ran.append("b"))
    monque.enqueue_sync("a")
    monque.enqueue_sync("b")
    cli_target.shared = monque
    thread, results = _run_worker_in_thread(["worker", "tests.cli_target:shared", "--names", "a"])
    try:
        wait_until(lambda: ran)
    finally:
        wait_until(lambda: monque.is_running)
        monque.request_stop()
        thread.join(30)
    assert results[0].exit_code == 0, results[0].output
    assert ran == ["a"] and monque.worker_names == ["a"]


def test_worker_command_on_a_di_container(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    from pymongo import AsyncMongoClient

    from tests.di_app.container import AppContainer

    container = AppContainer(connection=providers.Singleton(AsyncMongoClient, mongodb_uri))
    container.config.from_dict({"monque": {"database": mongo_db_name, "poll_interval": 0.05}})
    cli_target.container = container
    Monque(mongo_db).enqueue_sync("send-email", {"to": "cli@example.com"})
    engines: list[Monque] = []
    real_run = Monque.run

    async def spy_run(self: Monque, **kwargs: Any) -> None:  # to reach the engine, and stop it
        engines.append(self)
        await real_run(self, **kwargs)

    with mock.patch.object(Monque, "run", spy_run):
        thread, results = _run_worker_in_thread(
            ["--uri", mongodb_uri, "worker", "tests.cli_target:container", "--concurrency", "1"]
        )
        try:
            wait_until(lambda: container.mailer().sent)
        finally:
            wait_until(lambda: engines and engines[0].is_running)
            engines[0].request_stop()
            thread.join(30)
    assert results[0].exit_code == 0, results[0].output
    assert container.mailer().sent == ["cli@example.com"]


def test_configure_workers(mongo_db: Database[dict[str, Any]]) -> None:
    monque = Monque(mongo_db)
    monque.worker("a", lambda job: None)
    monque.worker("b", lambda job: None, concurrency=2)
    monque.configure_workers(concurrency=7)
    monque.configure_workers(only=["b"])
    assert monque.worker_names == ["b"]
    with pytest.raises(WorkerRegistrationError, match="no worker registered for a"):
        monque.configure_workers(only=["a"])
    with pytest.raises(WorkerRegistrationError):
        monque.configure_workers(concurrency=0)


def test_target_factories_and_json_rendering(run: Any, mongo_db: Database[dict[str, Any]]) -> None:
    from monque.cli.targets import resolve_engine

    monque = Monque(mongo_db)
    assert resolve_engine(lambda: monque) is monque
    with pytest.raises(MonqueError, match="factory returned"):
        resolve_engine(lambda: 42)
    job = monque.enqueue_sync(
        "x", {"when": "now"}, run_at=datetime(2031, 1, 1, tzinfo=timezone.utc)
    )
    shown = json.loads(run("--json", "jobs", "show", str(job.id)).output)
    assert shown["nextRunAt"].startswith("2031-01-01")
    assert run("--json", "jobs", "show", "0" * 24).exit_code == 1
