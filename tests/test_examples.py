"""Each example runs against the test server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymongo import MongoClient

from examples import motor_app
from examples.fastapi_app.app import create_app as create_fastapi_app
from examples.fastapi_app.app import create_container as create_fastapi_container
from monque import Monque
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_fastapi_example_enqueues_and_processes(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    container = create_fastapi_container(mongodb_uri, database=mongo_db_name)
    try:
        with TestClient(create_fastapi_app(container)) as client:
            first = client.post("/signups", json={"email": "ada@example.com"}).json()
            assert first["created"] is True and len(first["job"]) == 24
            wait_until(lambda: container.mailer().outbox)
        assert container.mailer().outbox == [("ada@example.com", "Welcome!")]
        digest = mongo_client[mongo_db_name].monque_jobs.find_one({"name": "daily-digest"})
        assert digest is not None and digest["timezone"] == "Europe/Paris"
    finally:
        mongo_client.drop_database(mongo_db_name)


def test_fastapi_handler_test_with_an_override(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """How to test a handler: override its dependency, enqueue, wait for the effect."""
    from examples.fastapi_app.services import Mailer

    container = create_fastapi_container(mongodb_uri, database=mongo_db_name)
    fake = Mailer(sender="test")
    try:
        with container.mailer.override(fake), TestClient(create_fastapi_app(container)) as client:
            client.post("/signups", json={"email": "grace@example.com"})
            wait_until(lambda: fake.outbox)
        assert fake.outbox == [("grace@example.com", "Welcome!")]
    finally:
        mongo_client.drop_database(mongo_db_name)


async def test_motor_example(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    try:
        assert await motor_app.run(mongodb_uri, mongo_db_name) == ["a.png", "b.png", "c.png"]
    finally:
        mongo_client.drop_database(mongo_db_name)


def test_flask_mongoengine_web_and_worker_process(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    pytest.importorskip("flask")
    from mongoengine.connection import disconnect

    from examples.flask_mongoengine.container import create_container
    from examples.flask_mongoengine.web import create_app

    container = create_container(producer_only=True, uri=mongodb_uri, db=mongo_db_name)
    env = {**os.environ, "MONGODB_URI": mongodb_uri, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import mongoengine, sys; from examples.flask_mongoengine import container as c;"
            f" orig = c.create_container;"
            f" c.create_container = lambda **kw: orig(**{{**kw, 'db': {mongo_db_name!r}}});"
            f" from examples.flask_mongoengine.worker import main; main()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == b"worker ready"
        client = create_app(container).test_client()
        response = client.post("/invoices", json={"number": "F-1", "amount": 12.5})
        assert response.status_code == 202
        rendered = wait_until(lambda: client.get("/invoices/F-1").get_json()["rendered"])
        assert rendered == "INVOICE F-1: 12.50 EUR"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, "the worker stops gracefully on SIGTERM"
        container.shutdown_resources()
        disconnect()
        mongo_client.drop_database(mongo_db_name)


def test_fastapi_example_welcomes_each_address_once(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """The unique key folds sign-ups made while the email is on its way into one job; the
    user's own `welcomed` record stops every later one."""
    from examples.fastapi_app.services import Mailer

    gate = threading.Event()

    class SlowMailer(Mailer):
        async def send(self, to: str, subject: str) -> None:
            await asyncio.to_thread(gate.wait, 10)
            await super().send(to, subject)

    container = create_fastapi_container(mongodb_uri, database=mongo_db_name)
    mailer = SlowMailer(sender="test")
    db = mongo_client[mongo_db_name]
    try:
        with container.mailer.override(mailer), TestClient(create_fastapi_app(container)) as client:
            first = client.post("/signups", json={"email": "ada@example.com"}).json()
            assert first["created"] is True and first["welcomed"] is False
            wait_until(
                lambda: (
                    (db.monque_jobs.find_one({"name": "send-welcome-email"}) or {}).get("status")
                    == "processing"
                )
            )
            again = client.post("/signups", json={"email": "ada@example.com"}).json()
            assert again == {"job": first["job"], "created": False, "welcomed": False}
            gate.set()
            wait_until(lambda: (db.users.find_one({"email": "ada@example.com"}) or {})["welcomed"])
            later = client.post("/signups", json={"email": "ada@example.com"}).json()
            assert later == {"job": None, "created": False, "welcomed": True}
            # A job enqueued past the endpoint's check (no unique key at all) sends nothing.
            extra = Monque(db).enqueue_sync("send-welcome-email", {"email": "ada@example.com"})
            wait_until(
                lambda: (db.monque_jobs.find_one({"_id": extra.id}) or {})["status"] == "completed"
            )
        assert mailer.outbox == [("ada@example.com", "Welcome!")]
        assert db.users.count_documents({}) == 1
    finally:
        gate.set()
        mongo_client.drop_database(mongo_db_name)


def test_flask_example_answers_errors_in_json(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    pytest.importorskip("flask")
    from mongoengine.connection import disconnect

    from examples.flask_mongoengine.container import create_container
    from examples.flask_mongoengine.web import create_app

    container = create_container(producer_only=True, uri=mongodb_uri, db=mongo_db_name)
    try:
        client = create_app(container).test_client()
        created = client.post("/invoices", json={"number": "F-1", "amount": 12.5})
        assert created.status_code == 202
        duplicate = client.post("/invoices", json={"number": "F-1", "amount": 99})
        assert duplicate.status_code == 409 and duplicate.is_json
        assert "exists already" in duplicate.get_json()["error"]
        unknown = client.get("/invoices/F-404")
        assert unknown.status_code == 404
        assert unknown.get_json() == {"error": "no such invoice"}
        for body in ({"number": "F-2"}, {"number": "", "amount": 1}, ["F-3", 1]):
            bad = client.post("/invoices", json=body)
            assert bad.status_code == 400 and bad.is_json, body
        not_json = client.post("/invoices", data="F-4", content_type="text/plain")
        assert not_json.status_code == 400 and "JSON object" in not_json.get_json()["error"]
        nowhere = client.get("/nowhere")
        assert nowhere.status_code == 404 and nowhere.is_json
        jobs = mongo_client[mongo_db_name].monque_jobs
        assert jobs.count_documents({"name": "render-invoice"}) == 1, "only for the new invoice"
    finally:
        container.shutdown_resources()
        disconnect()
        mongo_client.drop_database(mongo_db_name)


def test_flask_example_web_process_starts_as_documented(
    mongodb_uri: str, mongo_db_name: str, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """`flask --app examples.flask_mongoengine.web run` finds the app factory (checked with
    `routes`, which builds the app the same way and exits)."""
    pytest.importorskip("flask")
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": mongo_db_name,
        "PYTHONPATH": str(ROOT),
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "examples.flask_mongoengine.web", "routes"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "/invoices" in result.stdout and "/invoices/<number>" in result.stdout
    finally:
        mongo_client.drop_database(mongo_db_name)


def _default_sigint() -> None:
    # As a terminal starts a program: a runner that started us in the background (SIGINT
    # ignored, inherited) would otherwise leave Python's Ctrl-C handling off in the demo.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _quickstart(uri: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def test_the_quickstart_demo_says_what_it_waits_for_and_finishes(mongodb_uri: str) -> None:
    proc = _quickstart(mongodb_uri)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "waiting for the retries and the cron job (next at" in out
    assert "cron job fired: heartbeat-report" in out and "stopped gracefully" in out


def test_the_quickstart_demo_exits_cleanly_on_ctrl_c(mongodb_uri: str) -> None:
    proc = _quickstart(mongodb_uri)
    assert proc.stdout is not None
    for line in proc.stdout:  # until the workers run
        if "waiting for" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted: workers stopped" in out
    assert "Traceback" not in err, err
