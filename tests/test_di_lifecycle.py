"""monque_di lifecycle: start failures, worker processes from a container (run_worker,
configure_workers), one-line container errors, pruning dropped schedules, the missing extra."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from monque import InstanceIdConflictError, Monque, MonqueError
from monque import Job as JobModel
from monque.errors import WorkerRegistrationError
from monque.testing import free_port
from monque_di import (
    ContainerError,
    Job,
    MonqueContainer,
    SyncMonqueContainer,
    configure_workers,
    find_monque_container,
    run_worker,
)
from tests.conftest import FAST
from tests.di_app import jobs
from tests.di_app.container import AppContainer, SyncAppContainer
from tests.di_app.services import Session
from tests.di_app.support import async_app, config, start, sync_app
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent

# -- a worker that fails to start -------------------------------------------------------


def test_sync_container_raises_an_instance_id_conflict_at_once(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    with sync_app(mongodb_uri, mongo_db_name, instance_id="same-id") as first:
        first.init_resources()
        live: Monque = first.monque.engine()
        assert live.is_running
        client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
        second = SyncAppContainer(connection=providers.Object(client))
        second.config.from_dict(config(mongo_db_name, instance_id="same-id"))
        try:
            began = time.monotonic()
            with pytest.raises(InstanceIdConflictError, match="same-id"):
                second.init_resources()
            assert time.monotonic() - began < 10, "raised at once, not after a wait"
            second.shutdown_resources()  # clean after a failed start
            assert not second.monque.engine.initialized  # type: ignore[attr-defined]
        finally:
            client.close()
        job = live.enqueue_sync("nightly-report")
        wait_until(lambda: jobs.NightlyReport.runs == [job.id])  # the first one still works


async def test_async_container_raises_an_instance_id_conflict_too(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    async with async_app(mongodb_uri, mongo_db_name, instance_id="same-async") as first:
        await start(first)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        second = AppContainer(connection=providers.Object(client))
        second.config.from_dict(config(mongo_db_name, instance_id="same-async"))
        try:
            with pytest.raises(InstanceIdConflictError):
                await second.init_resources()  # type: ignore[misc]
            await second.shutdown_resources()  # type: ignore[misc]
        finally:
            await client.close()


@pytest.mark.filterwarnings("ignore::monque_di.MonqueDIWarning")  # not wired: no job runs
def test_sync_container_with_the_server_down_raises_at_once(mongo_db_name: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    )
    container = SyncAppContainer(connection=providers.Object(client))
    container.config.from_dict(config(mongo_db_name))
    try:
        began = time.monotonic()
        with pytest.raises((PyMongoError, MonqueError)):
            container.init_resources()
        assert time.monotonic() - began < 10
        container.shutdown_resources()
    finally:
        client.close()


# -- run_worker and configure_workers -------------------------------------------------------


def _in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_run_worker_on_a_sync_container_applies_names_and_concurrency_before_start(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    # producer_only: a web process's container; run_worker makes this process the worker.
    with sync_app(mongodb_uri, mongo_db_name, producer_only=True) as container:
        sessions_before = len(Session.opened)
        ready: list[tuple[bool, list[str], list[int]]] = []
        engines: list[Monque] = []

        def on_ready(monque: Monque) -> None:
            engines.append(monque)
            concurrency = [d.concurrency for d in monque._registry]
            ready.append((monque.is_running, monque.worker_names, concurrency))

        thread, errors = _in_thread(
            lambda: run_worker(
                container,
                only=["nightly-report", "with-session"],
                concurrency=1,
                handle_signals=False,
                on_ready=on_ready,
            )
        )
        wait_until(lambda: engines and engines[0].is_running)
        monque = engines[0]
        assert ready == [(False, ["nightly-report", "with-session"], [1, 1])]
        job = monque.enqueue_sync("nightly-report")
        skipped = monque.enqueue_sync("send-email", {"to": "x@example.com"})
        wait_until(lambda: jobs.NightlyReport.runs == [job.id])
        monque.request_stop()
        thread.join(30)
        assert not thread.is_alive() and errors == []
        assert (mongo_db.monque_jobs.find_one({"_id": skipped.id}) or {})["status"] == "pending"
        assert not container.monque.engine.initialized, "resources shut down"  # type: ignore[attr-defined]
        assert Session.opened[sessions_before:] == [], "no per-job resource at process level"


def test_run_worker_on_an_async_container(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    container = AppContainer(connection=providers.Singleton(AsyncMongoClient, mongodb_uri))
    container.config.from_dict(config(mongo_db_name))
    container.wire(modules=[jobs])
    engines: list[Monque] = []
    thread, errors = _in_thread(
        lambda: run_worker(
            container, only=["send-email"], handle_signals=False, on_ready=engines.append
        )
    )
    try:
        wait_until(lambda: engines and engines[0].is_running)
        assert engines[0].worker_names == ["send-email"]
        Monque(mongo_db).enqueue_sync("send-email", {"to": "run@example.com"})
        wait_until(lambda: container.mailer().sent == ["run@example.com"])
    finally:
        if engines:
            engines[0].request_stop()
        thread.join(30)
        container.unwire()
    assert errors == []


async def test_configure_workers_then_init_resources(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    async with async_app(mongodb_uri, mongo_db_name) as container:
        configure_workers(container, only="send-email, with-session", concurrency=3)
        monque = await start(container)
        assert monque.is_running and monque.worker_names == ["send-email", "with-session"]
        assert {d.concurrency for d in monque._registry} == {3}
        with pytest.raises(ContainerError, match="before init_resources"):
            configure_workers(container, concurrency=2)


async def test_configure_workers_with_an_unknown_name(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    async with async_app(mongodb_uri, mongo_db_name) as container:
        configure_workers(container, only=["no-such-job"])
        with pytest.raises(WorkerRegistrationError, match="no-such-job"):
            await start(container)
        with pytest.raises(ContainerError, match="concurrency"):
            configure_workers(container, concurrency=0)


def test_find_monque_container() -> None:
    app = AppContainer(connection=providers.Object(None))
    nested = find_monque_container(app)
    assert nested is app.monque.container
    assert find_monque_container(app.monque) is nested
    assert find_monque_container(nested) is nested
    assert find_monque_container(SyncAppContainer).declarative_parent is SyncMonqueContainer

    class Plain(containers.DeclarativeContainer):
        thing = providers.Object(1)

    with pytest.raises(ContainerError, match="nests no monque_di MonqueContainer"):
        find_monque_container(Plain())
    with pytest.raises(ContainerError, match="expected a dependency-injector container"):
        find_monque_container(42)


# -- one-line container errors ----------------------------------------------------------


class StrictApp(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration(strict=True)
    mongo = providers.Singleton(MongoClient, config.mongo.uri)
    monque = providers.Container(
        SyncMonqueContainer,
        connection=mongo,
        config=config.monque,
        jobs=providers.Object([]),
        app=__self__,
    )


class NoConnectionApp(containers.DeclarativeContainer):
    connection: providers.Dependency[Any] = providers.Dependency()
    monque = providers.Container(MonqueContainer, connection=connection)


def test_an_undefined_config_option_is_one_line() -> None:
    container = StrictApp()
    container.config.from_dict({"monque": {"producer_only": True}})
    with pytest.raises(ContainerError) as caught:
        container.init_resources()
    message = str(caught.value)
    assert "config.mongo.uri" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ContainerError, match=r"config\.mongo\.uri"):
        run_worker(container, handle_signals=False)


async def test_an_undefined_dependency_is_one_line() -> None:
    container = NoConnectionApp()
    with pytest.raises(ContainerError, match=r"NoConnectionApp.connection.*is not defined"):
        await container.init_resources()  # type: ignore[misc]
    with pytest.raises(ContainerError, match="is not defined"):
        await asyncio.to_thread(run_worker, container, handle_signals=False)


def test_container_errors_are_monque_errors() -> None:
    """So `monque worker` and apps catching MonqueError report them in one line."""
    assert issubclass(ContainerError, MonqueError)


# -- pruning the schedules of removed @Job classes ----------------------------------------


@Job(name="report-a", schedule="0 1 * * *")
class ReportA:
    def handle(self, job: JobModel[Any]) -> None: ...


@Job(name="report-b", schedule="0 2 * * *")
class ReportB:
    def handle(self, job: JobModel[Any]) -> None: ...


@Job(name="report-c", schedule="0 3 * * *", unique_key="report-c:v1")
class ReportCv1:
    def handle(self, job: JobModel[Any]) -> None: ...


@Job(name="report-c", schedule="0 3 * * *", unique_key="report-c:v2")
class ReportCv2:
    def handle(self, job: JobModel[Any]) -> None: ...


@Job(name="report-a")  # the class stays, its schedule= is gone
class ReportANoSchedule:
    def handle(self, job: JobModel[Any]) -> None: ...


class PruneApp(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()
    db: providers.Dependency[Any] = providers.Dependency()
    monque = providers.Container(
        SyncMonqueContainer,
        connection=db,
        config=config.monque,
        jobs=providers.Object([]),
        app=__self__,
    )


def _boot(db: Database[dict[str, Any]], job_classes: list[type], **options: Any) -> None:
    """One start and stop of the app with these @Job classes."""
    container = PruneApp(db=providers.Object(db))
    container.config.from_dict({"monque": {"producer_only": True, **FAST, **options}})
    container.monque.jobs.override(providers.Object(job_classes))
    container.init_resources()
    container.shutdown_resources()


def _schedules(db: Database[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (d["name"], d["uniqueKey"])
        for d in db.monque_jobs.find({"repeatInterval": {"$exists": True}})
    }


def test_prune_schedules_removes_only_this_apps_dropped_schedules(
    mongo_db: Database[dict[str, Any]],
) -> None:
    _boot(mongo_db, [ReportA, ReportB, ReportCv1])
    foreign = Monque(mongo_db)
    foreign.schedule_sync("0 4 * * *", "report-d")  # another service's, same collection
    foreign.schedule_sync("0 5 * * *", "report-a", unique_key="tenant-7")  # not @Job's
    before = _schedules(mongo_db)
    assert ("report-a", "schedule:report-a") in before

    _boot(mongo_db, [ReportB, ReportCv1])  # ReportA removed, pruning off: nothing goes
    assert _schedules(mongo_db) == before

    _boot(mongo_db, [ReportB, ReportCv2], prune_schedules=True)  # and report-c re-keyed
    assert _schedules(mongo_db) == {
        ("report-b", "schedule:report-b"),
        ("report-c", "report-c:v2"),
        ("report-d", "schedule:report-d"),
        ("report-a", "tenant-7"),
    }
    records = {d["name"] for d in mongo_db["monque_jobs_di_schedules"].find()}
    assert records == {"report-b", "report-c"}


def test_prune_schedules_when_the_class_loses_its_schedule(
    mongo_db: Database[dict[str, Any]],
) -> None:
    _boot(mongo_db, [ReportA])
    _boot(mongo_db, [ReportANoSchedule], prune_schedules="true")
    assert _schedules(mongo_db) == set()


def test_another_owner_never_prunes_this_apps_schedules(
    mongo_db: Database[dict[str, Any]],
) -> None:
    _boot(mongo_db, [ReportA], schedule_owner="billing")
    _boot(mongo_db, [], schedule_owner="reports", prune_schedules=True)
    assert _schedules(mongo_db) == {("report-a", "schedule:report-a")}
    _boot(mongo_db, [], schedule_owner="billing", prune_schedules=True)
    assert _schedules(mongo_db) == set()


def test_a_running_schedule_is_pruned_at_a_later_start(
    mongo_db: Database[dict[str, Any]],
) -> None:
    _boot(mongo_db, [ReportA, ReportB])
    mongo_db.monque_jobs.update_one({"name": "report-a"}, {"$set": {"status": "processing"}})
    _boot(mongo_db, [ReportB], prune_schedules=True)  # running: left, and remembered
    assert ("report-a", "schedule:report-a") in _schedules(mongo_db)
    mongo_db.monque_jobs.update_one({"name": "report-a"}, {"$set": {"status": "pending"}})
    _boot(mongo_db, [ReportB], prune_schedules=True)
    assert _schedules(mongo_db) == {("report-b", "schedule:report-b")}


# -- the missing extra --------------------------------------------------------------------


def test_import_without_the_di_extra_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['dependency_injector'] = None  # as if not installed\n"
        "try:\n"
        "    import monque_di\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pip install 'monque-py[di]'" in result.stdout
