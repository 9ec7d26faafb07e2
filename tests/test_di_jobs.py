"""monque_di: every Monque.worker() option through @Job, and known_jobs as a config option."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from dependency_injector import containers, providers
from pymongo.database import Database

from monque import Job as JobModel
from monque import UnknownJobError
from monque.errors import InvalidCronError, InvalidOptionError
from monque_di import Job, JobDefinitionError, MonqueContainer
from monque_di.decorators import job_spec
from tests.conftest import FAST
from tests.di_app.container import AppContainer
from tests.di_app.support import async_app, start
from tests.helpers import eventually


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


@Job(name="times-out", timeout=0.2, max_retries=1)
class TimesOut:
    async def handle(self, job: JobModel[Any]) -> None:
        await asyncio.sleep(5)


@Job(name="fails-fast", non_retryable=[Fatal])  # the engine's max_retries is 10
class FailsFast:
    async def handle(self, job: JobModel[Any]) -> None:
        raise Fatal("no point retrying")


@Job(name="retries-twice", max_retries=2, backoff_base=0.01, max_backoff=timedelta(seconds=1))
class RetriesTwice:
    attempts = 0

    async def handle(self, job: JobModel[Any]) -> None:
        RetriesTwice.attempts += 1
        raise Flaky("again")


@Job(name="slow-backoff", backoff_base=3600)
class SlowBackoff:
    async def handle(self, job: JobModel[Any]) -> None:
        raise Flaky("retry in an hour")


class OptionsApp(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()
    client: providers.Dependency[Any] = providers.Dependency()
    monque = providers.Container(
        MonqueContainer,
        connection=client,
        config=config.monque,
        jobs=providers.Object([TimesOut, FailsFast, RetriesTwice, SlowBackoff]),
        app=__self__,
    )


@pytest_asyncio.fixture
async def options_app(
    mongo_db: Database[dict[str, Any]], mongo_db_name: str
) -> AsyncIterator[OptionsApp]:
    container = OptionsApp(client=providers.Object(mongo_db))
    container.config.from_dict({"monque": {**FAST, "max_retries": 10}})
    yield container
    await container.shutdown_resources()  # type: ignore[misc]


def _doc(db: Database[dict[str, Any]], job_id: Any) -> dict[str, Any]:
    return db.monque_jobs.find_one({"_id": job_id}) or {}


async def test_worker_options_reach_the_engine(
    options_app: OptionsApp, mongo_db: Database[dict[str, Any]]
) -> None:
    await options_app.init_resources()  # type: ignore[misc]
    monque = await options_app.monque.engine()
    RetriesTwice.attempts = 0
    timed = await monque.enqueue("times-out")
    fatal = await monque.enqueue("fails-fast")
    twice = await monque.enqueue("retries-twice")
    slow = await monque.enqueue("slow-backoff")
    for job in (timed, fatal, twice):
        await eventually(lambda j=job.id: _doc(mongo_db, j).get("status") == "failed")
    assert "timeout" in _doc(mongo_db, timed.id)["failReason"]
    assert _doc(mongo_db, timed.id)["failCount"] == 1, "max_retries=1"
    assert _doc(mongo_db, fatal.id)["failCount"] == 1, "non_retryable: no retry of 10"
    assert RetriesTwice.attempts == 2, "max_retries=2"
    await eventually(lambda: _doc(mongo_db, slow.id).get("failCount"))
    slow_doc = _doc(mongo_db, slow.id)
    assert slow_doc["status"] == "pending"
    delay = (slow_doc["nextRunAt"] - slow_doc["failedAt"]).total_seconds()
    assert delay > 3000, "backoff_base=3600 s, not the engine's 0.05 s"


def test_the_spec_records_every_option() -> None:
    @Job(
        name="every-option",
        concurrency=3,
        timeout=timedelta(seconds=5),
        max_retries=4,
        backoff_base=2,
        max_backoff=60,
        non_retryable=(KeyError, Fatal),
        schedule="*/5 * * * *",
        timezone="Europe/Paris",
        unique_key="every",
        data={"x": 1},
        priority=7,
    )
    class EveryOption:
        def handle(self, job: Any) -> None: ...

    spec = job_spec(EveryOption)
    assert spec is not None
    assert spec.worker_options() == {
        "concurrency": 3,
        "timeout": timedelta(seconds=5),
        "max_retries": 4,
        "backoff_base": 2,
        "max_backoff": 60,
        "non_retryable": (KeyError, Fatal),
    }
    assert (spec.schedule, spec.priority, spec.unique_key) == ("*/5 * * * *", 7, "every")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": "10s"}, "timeout must be a number of seconds"),
        ({"max_retries": 0}, "max_retries must be an int >= 1"),
        ({"max_retries": True}, "max_retries must be an int >= 1"),
        ({"max_retries": 2.5}, "max_retries must be an int >= 1"),
        ({"backoff_base": -1}, "backoff_base must be > 0"),
        ({"max_backoff": float("inf")}, "max_backoff must be finite"),
        ({"backoff_base": 10, "max_backoff": 5}, "max_backoff must be >= backoff_base"),
        ({"non_retryable": KeyError}, "iterable of exception classes"),
        ({"non_retryable": [KeyError, "ValueError"]}, "exception classes, got 'ValueError'"),
        ({"non_retryable": [int]}, "exception classes, got <class 'int'>"),
        ({"concurrency": 0}, "concurrency must be an int >= 1"),
        ({"priority": 3}, "only apply with schedule="),
        ({"schedule": "* * * * *", "priority": "high"}, "priority must be an int"),
        ({"schedule": "not cron"}, "cron"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"unique_key": ""}, "unique_key"),
    ],
)
def test_bad_options_fail_at_decoration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(JobDefinitionError, match=r"@Job\('bad'\)") as caught:
        Job(name="bad", **options)
    assert message in str(caught.value)


def test_a_bad_name_or_cron_keeps_the_core_error_as_its_cause() -> None:
    with pytest.raises(JobDefinitionError, match="whitespace") as caught:
        Job(name="has space")
    assert caught.value.__cause__ is not None
    with pytest.raises(JobDefinitionError) as cron:
        Job(name="x", schedule="61 * * * *")
    assert isinstance(cron.value.__cause__, InvalidCronError)


# -- known_jobs ---------------------------------------------------------------------------


@pytest_asyncio.fixture
async def app(
    mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> AsyncIterator[AppContainer]:
    async with async_app(mongodb_uri, mongo_db_name, producer_only=True) as container:
        yield container


async def test_by_default_any_name_can_be_enqueued(
    app: AppContainer, mongo_db: Database[dict[str, Any]]
) -> None:
    """Names another service, or the TypeScript Monque, processes."""
    monque = await start(app)
    job = await monque.enqueue("billing:charge-card", {"invoice": 1})
    assert job.created and mongo_db.monque_jobs.count_documents({"name": job.name}) == 1


@pytest.mark.parametrize("value", [True, "true", "yes", "1"])
async def test_known_jobs_true_means_the_apps_job_names(
    app: AppContainer, mongo_db_name: str, value: object
) -> None:
    app.config.monque.known_jobs.from_value(value)
    monque = await start(app)
    await monque.enqueue("send-email", {"to": "a@example.com"})
    with pytest.raises(UnknownJobError, match="send-emial"):
        await monque.enqueue("send-emial", {})


@pytest.mark.parametrize(
    "value", [["send-email", "billing:charge-card"], "send-email, billing:charge-card"]
)
async def test_known_jobs_as_an_explicit_list(app: AppContainer, value: object) -> None:
    app.config.monque.known_jobs.from_value(value)
    monque = await start(app)  # registers nightly-report's schedule: the app's own, allowed
    await monque.enqueue("billing:charge-card")
    with pytest.raises(UnknownJobError):
        await monque.enqueue("with-session")  # an @Job name, but not in the list


@pytest.mark.parametrize("value", [False, "false", "off", None])
async def test_known_jobs_off(app: AppContainer, value: object) -> None:
    app.config.monque.known_jobs.from_value(value)
    monque = await start(app)
    await monque.enqueue("anything-at-all")


async def test_known_jobs_of_the_wrong_kind(app: AppContainer) -> None:
    app.config.monque.known_jobs.from_value(42)
    with pytest.raises(InvalidOptionError, match="known_jobs"):
        await start(app)


async def test_known_jobs_true_without_any_job_class(mongo_db: Database[dict[str, Any]]) -> None:
    container = OptionsApp(client=providers.Object(mongo_db))
    container.config.from_dict({"monque": {"known_jobs": True, "producer_only": True}})
    container.monque.jobs.override(providers.Object([]))
    with pytest.raises(InvalidOptionError, match="no @Job classes"):
        await container.init_resources()  # type: ignore[misc]
