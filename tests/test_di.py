"""monque_di: the container, @Job classes resolved per execution, overrides, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from dependency_injector import providers
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from monque import Monque, UnknownJobError
from monque.testing import drain
from monque_di import (
    Job,
    JobDefinitionError,
    JobResolutionError,
    discover_jobs,
    options_from_config,
)
from tests.conftest import FAST
from tests.di_app import jobs
from tests.di_app.container import AppContainer, SyncAppContainer
from tests.di_app.services import FakeMailer, Mailer
from tests.helpers import eventually, wait_until


def _config(db_name: str, **extra: Any) -> dict[str, Any]:
    return {"monque": {"database": db_name, **FAST, **extra}}


@pytest_asyncio.fixture
async def app(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> AsyncIterator[AppContainer]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    container = AppContainer(connection=client)
    container.config.from_dict(_config(mongo_db_name))
    container.wire(modules=[jobs])
    yield container
    result = container.shutdown_resources()
    if result is not None:
        await result
    container.unwire()
    await client.close()


async def _start(container: AppContainer) -> Monque:
    result = container.init_resources()
    if result is not None:
        await result
    monque: Monque = await container.monque.engine()
    return monque


async def test_jobs_run_with_injected_services(app: AppContainer) -> None:
    monque = await _start(app)
    await monque.enqueue("send-email", {"to": "a@example.com"})
    await monque.enqueue("send-email", {"to": "b@example.com"})
    await drain(monque)
    assert sorted(app.mailer().sent) == ["a@example.com", "b@example.com"]


async def test_an_override_between_two_jobs_applies_to_the_second(app: AppContainer) -> None:
    monque = await _start(app)
    await monque.enqueue("send-email", {"to": "first@example.com"})
    await drain(monque)
    fake = FakeMailer()
    with app.mailer.override(fake):
        await monque.enqueue("send-email", {"to": "second@example.com"})
        await drain(monque)
    await monque.enqueue("send-email", {"to": "third@example.com"})
    await drain(monque)
    assert app.mailer().sent == ["first@example.com", "third@example.com"]
    assert fake.sent == ["second@example.com"]


async def test_overriding_the_job_class_provider(app: AppContainer) -> None:
    monque = await _start(app)
    ran: list[str] = []

    class Replacement:
        async def handle(self, job: Any) -> None:
            ran.append(job.data["to"])

    with app.send_email.override(providers.Factory(Replacement)):
        await monque.enqueue("send-email", {"to": "replaced@example.com"})
        await drain(monque)
    assert ran == ["replaced@example.com"] and app.mailer().sent == []


async def test_distinct_instances_share_a_singleton(app: AppContainer) -> None:
    monque = await _start(app)
    seen: list[tuple[Any, Any]] = []  # the objects themselves: a dead object's id() is reused
    real_handle = jobs.SendEmail.handle

    async def recording_handle(self: jobs.SendEmail, job: Any) -> None:
        seen.append((self, self.mailer))
        await real_handle(self, job)

    jobs.SendEmail.handle = recording_handle  # type: ignore[method-assign]
    try:
        for i in range(3):
            await monque.enqueue("send-email", {"to": f"{i}@example.com"})
        await drain(monque)
    finally:
        jobs.SendEmail.handle = real_handle  # type: ignore[method-assign]
    assert len({id(instance) for instance, _ in seen}) == 3
    assert len({id(mailer) for _, mailer in seen}) == 1


async def test_per_job_resources_are_closed_after_success_and_failure(app: AppContainer) -> None:
    monque = await _start(app)
    jobs.WithSession.used.clear()
    await monque.enqueue("with-session", "ok")
    await monque.enqueue("with-session", "fail")
    await drain(monque)
    assert len(jobs.WithSession.used) == 2
    assert len({s.id for s in jobs.WithSession.used}) == 2, "one session per job"
    assert all(s.closed for s in jobs.WithSession.used)


async def test_schedule_from_the_decorator_is_never_duplicated(
    app: AppContainer, mongo_db: Database[dict[str, Any]]
) -> None:
    await _start(app)
    await app.shutdown_resources()  # type: ignore[misc]
    await _start(app)  # a restart registers the same schedule again
    docs = list(mongo_db.monque_jobs.find({"name": "nightly-report"}))
    assert len(docs) == 1
    assert docs[0]["repeatInterval"] == "0 3 * * *" and docs[0]["timezone"] == "Europe/Berlin"


async def test_producer_only_claims_nothing_and_knows_the_job_names(
    app: AppContainer, mongo_db: Database[dict[str, Any]], mongo_db_name: str
) -> None:
    app.config.from_dict(_config(mongo_db_name, producer_only="true", known_jobs="true"))
    monque = await _start(app)
    assert not monque.is_running
    job = await monque.enqueue("send-email", {"to": "x@example.com"})
    with pytest.raises(UnknownJobError):
        await monque.enqueue("send-emial", {})
    await asyncio.sleep(0.3)  # several poll intervals of a worker, had one been started
    assert (mongo_db.monque_jobs.find_one({"_id": job.id}) or {})["status"] == "pending"


async def test_shutdown_resources_drains_running_jobs(
    app: AppContainer, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = await _start(app)
    gate = asyncio.Event()

    async def slow_send(to: str) -> None:
        await gate.wait()

    mailer = app.mailer()
    mailer.send = slow_send  # type: ignore[method-assign]
    job = await monque.enqueue("send-email", {"to": "slow@example.com"})
    await eventually(lambda: monque.running_jobs)
    shutdown = asyncio.ensure_future(app.shutdown_resources())  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert not shutdown.done()
    gate.set()
    await shutdown
    assert not monque.is_running
    assert (mongo_db.monque_jobs.find_one({"_id": job.id}) or {})["status"] == "completed"


@pytest.mark.parametrize("kind", ["database", "client", "async_database", "async_client", "motor"])
async def test_every_handle_kind_end_to_end(
    kind: str, mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    closers: list[Any] = []
    connection: Any
    if kind in ("database", "client"):
        sync_client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
        closers.append(sync_client.close)
        connection = sync_client[mongo_db_name] if kind == "database" else sync_client
    elif kind in ("async_database", "async_client"):
        async_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        closers.append(async_client.close)
        connection = async_client[mongo_db_name] if kind == "async_database" else async_client
    else:
        motor_asyncio = pytest.importorskip("motor.motor_asyncio")
        connection = motor_asyncio.AsyncIOMotorClient(mongodb_uri)
        closers.append(connection.close)
    container = AppContainer(connection=connection)
    container.config.from_dict(_config(mongo_db_name))
    container.wire(modules=[jobs])
    try:
        monque = await _start(container)
        await monque.enqueue("send-email", {"to": kind})
        await drain(monque)
        assert container.mailer().sent == [kind]
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
        container.unwire()
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def test_an_unknown_connection_fails_at_init(mongo_db_name: str) -> None:
    container = AppContainer(connection=providers.Object(12345))
    container.config.from_dict(_config(mongo_db_name))
    with pytest.raises(TypeError, match="pymongo Database"):
        await container.init_resources()  # type: ignore[misc]


async def test_an_unresolvable_job_fails_at_start(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    @Job(name="needs-things")
    class NeedsThings:
        def __init__(self, things: list[str]) -> None:
            self.things = things

        def handle(self, job: Any) -> None: ...

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    container = AppContainer(connection=client)
    container.config.from_dict(_config(mongo_db_name))
    container.monque.jobs.override(providers.Object([NeedsThings]))
    try:
        with pytest.raises(JobResolutionError, match=r"needs-things.*NeedsThings"):
            await container.init_resources()  # type: ignore[misc]
    finally:
        await client.close()


def test_definition_errors() -> None:
    with pytest.raises(JobDefinitionError, match="no handle"):

        @Job(name="x")
        class NoHandle:
            pass

    @Job(name="dup")
    class One:
        def handle(self, job: Any) -> None: ...

    @Job(name="dup")
    class Two:
        def handle(self, job: Any) -> None: ...

    with pytest.raises(JobDefinitionError, match="declared twice"):
        discover_jobs([One, Two])
    with pytest.raises(JobDefinitionError, match="got 42"):
        discover_jobs([42])
    with pytest.raises(JobDefinitionError, match="only apply with schedule"):
        Job(name="x", timezone="UTC")
    with pytest.raises(JobDefinitionError, match="concurrency"):
        Job(name="x", concurrency=0)
    with pytest.raises(JobDefinitionError, match="classes"):
        Job(name="x")(lambda job: None)  # type: ignore[type-var]


def test_discovery_from_packages_and_dotted_names() -> None:
    names = [spec.name for spec in discover_jobs(["tests.di_app"])]
    assert names == [
        "send-email",
        "nightly-report",
        "with-session",
        "hold-session",
        "session-in-init",
    ]
    assert [s.name for s in discover_jobs([jobs, jobs.SendEmail])] == names


def test_options_from_config_coerces_strings() -> None:
    options = options_from_config(
        {
            "database": "x",
            "producer_only": "1",
            "poll_interval": "0.5",
            "max_retries": "3",
            "create_indexes": "false",
            "collection": "jobs",
            "instance_concurrency": None,
        }
    )
    assert options == {
        "poll_interval": 0.5,
        "max_retries": 3,
        "create_indexes": False,
        "collection": "jobs",
    }
    with pytest.raises(Exception, match="not a number"):
        options_from_config({"max_retries": "many"})


@pytest.fixture
def sync_app(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> Iterator[SyncAppContainer]:
    mongoengine = pytest.importorskip("mongoengine")
    from mongoengine.connection import disconnect

    alias = f"di-{mongo_db_name}"
    mongoengine.connect(
        db=mongo_db_name, host=mongodb_uri, alias=alias, uuidRepresentation="standard"
    )
    container = SyncAppContainer(connection=alias)
    container.config.from_dict(_config(mongo_db_name))
    container.wire(modules=[jobs])
    yield container
    container.shutdown_resources()
    container.unwire()
    disconnect(alias)


def test_sync_container_on_mongoengine(
    sync_app: SyncAppContainer, mongo_db: Database[dict[str, Any]]
) -> None:
    sync_app.init_resources()
    monque: Monque = sync_app.monque.engine()
    assert monque.is_running, "a worker runs on a background thread"
    jobs.NightlyReport.runs.clear()
    job = monque.enqueue_sync("nightly-report")
    wait_until(lambda: jobs.NightlyReport.runs)
    assert jobs.NightlyReport.runs == [job.id]
    sync_app.shutdown_resources()
    assert not monque.is_running


def test_override_the_mailer_in_a_sync_handler_test(sync_app: SyncAppContainer) -> None:
    """The documented way to test a handler: override a provider, enqueue, wait."""
    fake = FakeMailer()
    with sync_app.mailer.override(fake):
        sync_app.init_resources()
        monque: Monque = sync_app.monque.engine()
        monque.enqueue_sync("send-email", {"to": "test@example.com"})
        wait_until(lambda: fake.sent)
    assert fake.sent == ["test@example.com"]
    assert isinstance(sync_app.mailer(), Mailer) and not isinstance(sync_app.mailer(), FakeMailer)
