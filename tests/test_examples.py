"""Each example runs against the test server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymongo import MongoClient

from examples import motor_app
from examples.fastapi_app.app import create_app as create_fastapi_app
from examples.fastapi_app.app import create_container as create_fastapi_container
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
