"""monque.testing for apps: drain_sync for sync apps, the embedded server's clean-up and its
message when it is not installed."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import pytest
from pymongo.database import Database

from monque import Job, Monque, MonqueError
from monque.testing import EmbeddedMongo, drain_sync
from tests.conftest import FAST


def test_drain_sync_runs_a_sync_apps_queue_until_it_is_empty(
    mongo_db: Database[dict[str, Any]],
) -> None:
    monque = Monque(mongo_db, **FAST)
    seen: list[Any] = []
    threads: set[str] = set()

    def handler(job: Job[Any]) -> None:
        seen.append(job.data)
        threads.add(threading.current_thread().name)

    monque.worker("invoice", handler)
    for n in range(3):
        monque.enqueue_sync("invoice", n)
    drain_sync(monque)
    assert sorted(seen) == [0, 1, 2]
    assert not monque.is_running, "stopped again"
    assert mongo_db.monque_jobs.count_documents({"status": "completed"}) == 3


def test_the_embedded_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "secantus" else real(name)
    )
    server = EmbeddedMongo()
    with pytest.raises(RuntimeError, match=r"MONGODB_URI.*monque-py\[embedded\]"):
        server.start()
    server.close()


def test_the_embedded_server_leaves_no_files_behind() -> None:
    server = EmbeddedMongo().start()
    storage, log = server.storage_path, server._log_path
    assert log.exists()
    server.close()
    assert not storage.exists() and not log.exists()


def test_monque_error_for_drain_sync_on_a_running_engine(
    mongo_db: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monque = Monque(mongo_db, **FAST)
    monkeypatch.setattr(Monque, "is_running", property(lambda self: True))
    with pytest.raises(MonqueError, match="stop the running one"):
        drain_sync(monque)
