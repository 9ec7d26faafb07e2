"""Bad input gets a typed error at the call site, and nothing stored is touched."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo.database import Database

from monque import (
    InvalidCronError,
    InvalidJobNameError,
    InvalidOptionError,
    InvalidPayloadError,
    InvalidScheduleError,
    InvalidUniqueKeyError,
    Monque,
    MonqueError,
    PayloadTooLargeError,
)
from tests.conftest import MakeMonque


# The TypeScript Monque's rules: no whitespace (JavaScript's \\s) or control characters,
# at most 255 UTF-16 units.
@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        " padded",
        "send email",
        "tab\tname",
        "nbsp\u00a0name",
        "ideographic\u3000space",
        "bom\ufeffname",
        "c1\x85control",
        "lone\ud800surrogate",
        "del\x7f",
        "x" * 256,
        "\U0001f600" * 128,  # 128 characters, 256 UTF-16 units
        None,
        42,
    ],
)
async def test_bad_job_names(make_monque: MakeMonque, name: Any) -> None:
    with pytest.raises(InvalidJobNameError):
        await make_monque().enqueue(name)


@pytest.mark.parametrize(
    "name", ["x" * 255, "\U0001f600" * 127 + "x", "$where", "emails.send:v2", "日本語"]
)
async def test_names_the_typescript_monque_accepts(make_monque: MakeMonque, name: str) -> None:
    job = await make_monque().enqueue(name)
    assert job.name == name


@pytest.mark.parametrize(
    "key",
    [{"$ne": None}, 1, b"bytes", "", "   ", "\ufeff", "k" * 1025, "bell\x07", "\ud800", ["a"]],
)
async def test_bad_unique_keys_are_never_used_in_a_query(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]], key: Any
) -> None:
    monque = make_monque()
    existing = await monque.enqueue("job", unique_key="real")
    with pytest.raises(InvalidUniqueKeyError):
        await monque.enqueue("job", unique_key=key)
    assert mongo_db.monque_jobs.count_documents({}) == 1
    assert mongo_db.monque_jobs.find_one({"_id": existing.id}) is not None


@pytest.mark.parametrize("data", [{1, 2}, object(), {"k": Decimal("1.5")}, {1: "int key"}])
async def test_payloads_that_are_not_bson(make_monque: MakeMonque, data: Any) -> None:
    with pytest.raises(InvalidPayloadError, match="BSON"):
        await make_monque().enqueue("job", data)


async def test_payload_over_max_payload_size(
    make_monque: MakeMonque, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = make_monque(max_payload_size=1024)
    await monque.enqueue("job", {"blob": "x" * 900})
    with pytest.raises(PayloadTooLargeError) as excinfo:
        await monque.enqueue("job", {"blob": "x" * 2000})
    assert excinfo.value.limit == 1024
    assert mongo_db.monque_jobs.count_documents({}) == 1


async def test_payload_over_sixteen_megabytes(make_monque: MakeMonque) -> None:
    with pytest.raises(PayloadTooLargeError):
        await make_monque().enqueue("job", {"blob": "x" * (16 * 1024 * 1024)})


async def test_naive_run_at_and_bad_delays(make_monque: MakeMonque) -> None:
    monque = make_monque()
    with pytest.raises(InvalidScheduleError, match="timezone-aware"):
        await monque.enqueue("job", run_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidScheduleError):
        await monque.enqueue("job", delay=-1)
    with pytest.raises(InvalidScheduleError):
        await monque.enqueue("job", delay=timedelta(seconds=-5))
    with pytest.raises(InvalidScheduleError):
        await monque.enqueue("job", delay="soon")  # type: ignore[arg-type]
    with pytest.raises(InvalidScheduleError, match="not both"):
        await monque.enqueue("job", delay=1, run_at=datetime.now().astimezone())
    with pytest.raises(InvalidScheduleError):
        await monque.enqueue("job", run_at="tomorrow")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        await monque.enqueue("job", priority="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        await monque.enqueue("job", priority=10**9)


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "61 * * * * *",
        "@fortnightly",
        "every day",
        None,
    ],
)
async def test_invalid_cron(make_monque: MakeMonque, cron: Any) -> None:
    with pytest.raises(InvalidCronError):
        await make_monque().schedule(cron, "job")


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd"])
async def test_invalid_timezone(make_monque: MakeMonque, tz: str) -> None:
    with pytest.raises(InvalidScheduleError):
        await make_monque().schedule("@daily", "job", timezone=tz)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"poll_interval": "1s"}, "poll_interval"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": float("nan")}, "finite"),
        ({"lock_timeout": True}, "lock_timeout"),
        ({"max_retries": 0}, "max_retries"),
        ({"max_retries": 2.5}, "max_retries"),
        ({"worker_concurrency": 0}, "worker_concurrency"),
        ({"instance_concurrency": -1}, "instance_concurrency"),
        ({"max_payload_size": 17 * 1024 * 1024}, "max_payload_size"),
        ({"backoff_jitter": 2}, "backoff_jitter"),
        ({"heartbeat_interval": 60, "lock_timeout": 30}, "heartbeat_interval"),
        ({"max_backoff": 1, "backoff_base": 60}, "max_backoff"),
        ({"collection": ""}, "collection"),
        ({"collection": "a$b"}, "collection"),
        ({"instance_id": 7}, "instance_id"),
        ({"create_indexes": "yes"}, "create_indexes"),
        ({"change_streams": 1}, "change_streams"),
        ({"stream_poll_interval": 0}, "stream_poll_interval"),
        ({"pol_interval": 1}, "unknown option"),
    ],
)
def test_constructor_options_are_validated(
    mongo_db: Database[dict[str, Any]], options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidOptionError, match=fragment):
        Monque(mongo_db, **options)


def test_errors_are_catchable_as_monque_error_and_builtins() -> None:
    assert issubclass(InvalidOptionError, MonqueError)
    assert issubclass(InvalidOptionError, TypeError)
    assert issubclass(InvalidOptionError, ValueError)
    assert issubclass(PayloadTooLargeError, InvalidPayloadError)
    assert issubclass(InvalidCronError, InvalidScheduleError)
