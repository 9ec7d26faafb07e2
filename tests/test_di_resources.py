"""monque_di per-job resources: a ContextLocalResource is one instance per job execution,
closed when that job ends, whoever else runs at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from dependency_injector import containers, providers
from dependency_injector.wiring import Closing, Provide, inject
from pymongo import AsyncMongoClient
from pymongo.database import Database

from monque import Job as JobModel
from monque.testing import drain
from monque_di import Job, MonqueContainer, MonqueDIWarning
from tests.conftest import FAST
from tests.di_app import jobs
from tests.di_app.container import AppContainer
from tests.di_app.services import Session
from tests.di_app.support import async_app, start, sync_app
from tests.helpers import eventually, wait_until


@pytest_asyncio.fixture
async def app(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> AsyncIterator[AppContainer]:
    async with async_app(mongodb_uri, mongo_db_name) as container:
        yield container


async def test_overlapping_jobs_each_get_their_own_session(app: AppContainer) -> None:
    """The long job keeps its session open while a short one opens and closes its own."""
    monque = await start(app)
    await monque.enqueue("hold-session")
    await eventually(jobs.HoldSession.holding.is_set)
    await monque.enqueue("with-session", "ok")
    await eventually(lambda: jobs.WithSession.used and jobs.WithSession.used[0].closed)
    jobs.HoldSession.gate.set()
    await drain(monque)
    [(held, closed_while_running)] = jobs.HoldSession.seen
    [short] = jobs.WithSession.used
    assert held is not short, "one session per job"
    assert not closed_while_running, "the short job's end did not close the long job's session"
    assert held.closed, "closed once its own job ended"


def test_overlapping_sync_handlers_on_the_sync_container(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    with sync_app(mongodb_uri, mongo_db_name) as container:
        container.init_resources()
        monque = container.monque.engine()
        monque.enqueue_sync("hold-session")
        wait_until(jobs.HoldSession.holding.is_set)
        monque.enqueue_sync("with-session", "ok")
        wait_until(lambda: jobs.WithSession.used and jobs.WithSession.used[0].closed)
        jobs.HoldSession.gate.set()
        wait_until(lambda: jobs.HoldSession.seen and jobs.HoldSession.seen[0][0].closed)
        [(held, closed_while_running)] = jobs.HoldSession.seen
        assert held is not jobs.WithSession.used[0] and not closed_while_running


async def test_a_resource_injected_through_the_class_provider_is_per_job(
    app: AppContainer,
) -> None:
    """No Closing marker, no wiring: monque_di closes it when the job ends."""
    monque = await start(app)
    for _ in range(3):
        await monque.enqueue("session-in-init")
    await drain(monque)
    sessions = [session for session, _ in jobs.SessionInInit.seen]
    assert len({id(s) for s in sessions}) == 3
    assert not any(closed for _, closed in jobs.SessionInInit.seen), "open while the job runs"
    assert all(s.closed for s in sessions), "closed after it"


async def test_jobs_never_inherit_a_session_the_starting_code_opened(app: AppContainer) -> None:
    """An instance the code that starts the worker resolved (a check, a request, a script)
    stays that code's: jobs started from that context still get their own."""
    mine = app.session()
    assert isinstance(mine, Session)
    monque = await start(app)
    await monque.enqueue("session-in-init")
    await monque.enqueue("with-session", "ok")
    await drain(monque)
    [(in_init, _)] = jobs.SessionInInit.seen
    [with_session] = jobs.WithSession.used
    assert mine not in (in_init, with_session)
    assert not mine.closed and app.session() is mine
    assert in_init.closed and with_session.closed
    app.session.shutdown()


async def test_the_start_check_leaves_no_session_open(app: AppContainer) -> None:
    """Resolving every job class at start (to fail early) opens per-job resources in a scope
    of its own, closed at once."""
    before = len(Session.opened)
    await start(app)
    # dependency-injector's init_resources() opens every resource, per-job ones included, in
    # the calling context: that one is the caller's (jobs never see it), open until shutdown.
    callers = app.session()
    checked = [s for s in Session.opened[before:] if s is not callers]
    assert checked, "the check built SessionInInit, so it opened a session"
    assert all(s.closed for s in checked)


async def test_a_failing_job_closes_its_session_too(app: AppContainer) -> None:
    monque = await start(app)
    await monque.enqueue("with-session", "fail")
    await drain(monque)
    [session] = jobs.WithSession.used
    assert session.closed


# -- async resources and async handlers ----------------------------------------------------


class AsyncSession:
    opened: ClassVar[list[AsyncSession]] = []

    def __init__(self) -> None:
        self.closed = False
        AsyncSession.opened.append(self)


async def open_async_session() -> AsyncIterator[AsyncSession]:
    session = AsyncSession()
    try:
        yield session
    finally:
        await asyncio.sleep(0)
        session.closed = True


@Job(name="async-hold")
class AsyncHold:
    gate: ClassVar[asyncio.Event | None] = None
    seen: ClassVar[list[tuple[AsyncSession, bool]]] = []

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def handle(self, job: JobModel[Any]) -> None:
        if job.data == "hold":
            assert AsyncHold.gate is not None
            await AsyncHold.gate.wait()
        AsyncHold.seen.append((self.session, self.session.closed))


class AsyncApp(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()
    client: providers.Dependency[Any] = providers.Dependency()
    session = providers.ContextLocalResource(open_async_session)
    async_hold = providers.Factory(AsyncHold, session=session)
    monque = providers.Container(
        MonqueContainer,
        connection=client,
        config=config.monque,
        jobs=providers.Object([AsyncHold]),
        app=__self__,
    )


async def test_async_per_job_resources_in_overlapping_async_handlers(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    container = AsyncApp(client=providers.Object(client))
    container.config.from_dict({"monque": {"database": mongo_db_name, **FAST}})
    AsyncHold.gate = asyncio.Event()
    AsyncHold.seen.clear()
    try:
        await container.init_resources()  # type: ignore[misc]
        monque = await container.monque.engine()
        await monque.enqueue("async-hold", "hold")
        await eventually(lambda: monque.running_jobs)
        await monque.enqueue("async-hold", "quick")
        await eventually(lambda: AsyncHold.seen)
        AsyncHold.gate.set()
        await drain(monque)
        (quick, _), (held, held_closed) = AsyncHold.seen
        assert quick is not held and not held_closed
        assert quick.closed and held.closed
    finally:
        AsyncHold.gate.set()
        await container.shutdown_resources()  # type: ignore[misc]
        await client.close()


# -- the warning about Closing on a shared Resource ----------------------------------------


def open_shared() -> Any:
    yield object()


@Job(name="closes-shared")
class ClosesShared:
    @inject
    def handle(self, job: JobModel[Any], thing: Any = Closing[Provide["shared"]]) -> None: ...


class SharedApp(containers.DeclarativeContainer):
    __self__ = providers.Self()
    client: providers.Dependency[Any] = providers.Dependency()
    shared = providers.Resource(open_shared)
    monque = providers.Container(
        MonqueContainer,
        connection=client,
        config=providers.Object({"poll_interval": 0.05}),
        jobs=providers.Object([ClosesShared]),
        app=__self__,
    )


async def test_closing_a_shared_resource_is_a_warning_at_start(
    mongo_db: Database[dict[str, Any]], mongo_client: Any
) -> None:
    container = SharedApp(client=providers.Object(mongo_db))
    container.wire(modules=[__name__])
    try:
        with pytest.warns(MonqueDIWarning, match=r"closes-shared.*ContextLocalResource"):
            await container.init_resources()  # type: ignore[misc]
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
        container.unwire()


@pytest.mark.filterwarnings("ignore:.*closes a providers.Resource")
async def test_unwired_markers_are_a_warning_at_start(
    mongo_db: Database[dict[str, Any]],
) -> None:
    container = SharedApp(client=providers.Object(mongo_db))
    try:
        with pytest.warns(MonqueDIWarning, match=r"not wired.*container\.wire"):
            await container.init_resources()  # type: ignore[misc]
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


def test_a_sync_handler_scope_leaves_the_callers_context_alone() -> None:
    """A sync handler runs in a copy of the calling context in which the per-job resources
    start afresh: the caller's instance is neither used nor closed, nor replaced."""
    from monque_di.decorators import job_spec
    from monque_di.resolution import make_handler

    container = AppContainer(connection=providers.Object(None))
    outer = container.session()
    spec = job_spec(jobs.SessionInInit)
    assert spec is not None
    handler = make_handler(spec, container.session_in_init, container)
    jobs.SessionInInit.seen.clear()
    handler(None)  # type: ignore[arg-type]
    [(inner, closed_while_running)] = jobs.SessionInInit.seen
    assert inner is not outer and not closed_while_running and inner.closed
    assert not outer.closed and container.session() is outer
    container.session.shutdown()
