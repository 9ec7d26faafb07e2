"""Issue 12's table, the rows the other interop files do not cover: priority (7), retention
after a TS retry (8), cancel of a running job (11) and time zones (12). The last two are TS
limits: the tests pin down the documented behaviour (docs/typescript-interop.md)."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from monque import Job, JobStatus, Monque
from monque.cron import check_cron, next_run
from monque.errors import InvalidCronError
from tests.conftest import FAST
from tests.helpers import eventually
from tests.interop.harness import TsHarness, TsOpError, ts_job
from tests.interop.test_interop import runs_of, status_is, stored

UTC = timezone.utc


async def test_row7_a_ts_job_without_priority_ranks_as_zero(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db, **FAST)
    low = await monque.enqueue("interop-prio", "negative", priority=-5)
    (ts_id,) = await ts.enqueue(ts_job("interop-prio", "from-ts"))
    assert "priority" not in stored(mongo_db, ts_id)
    order: list[Any] = []

    async def run(job: Job[Any]) -> None:
        order.append(job.data)

    monque.worker("interop-prio", run, concurrency=1)
    await monque.start()
    await eventually(lambda: len(order) == 2, message="both ran")
    await monque.stop()
    assert order == ["from-ts", "negative"]
    assert stored(mongo_db, ts_id)["priority"] == 0
    assert stored(mongo_db, low.id)["priority"] == -5


async def test_row8_a_job_ts_retried_keeps_expire_at_but_is_outside_the_ttl_index(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    monque = Monque(async_mongo_db, **{**FAST, "retention": {"cancelled": 1}})
    job = await monque.enqueue("interop-retention", delay=3600)
    await monque.cancel_job(job.id)  # TS retries failed and cancelled jobs
    assert "expireAt" in stored(mongo_db, job.id)
    retried = await ts.op("retryJob", id=job.id)
    assert retried["status"] == "pending"
    doc = stored(mongo_db, job.id)
    assert doc["status"] == "pending" and "expireAt" in doc, "TS leaves expireAt behind"
    index = mongo_db.monque_jobs.index_information()["monque_retention"]
    assert index["partialFilterExpression"] == {
        "status": {"$in": ["completed", "failed", "cancelled"]}
    }, "so the TTL monitor never sees the pending job"


async def test_row11_cancel_of_a_running_job_across_languages(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    """A TS worker ignores cancelRequested: the run completes (documented limit). TS refuses
    to cancel a running Python job (its JobStateError)."""
    monque = Monque(async_mongo_db, **{**FAST, "lock_timeout": 5})
    job = await monque.enqueue("interop-cancel-ts")
    worker = await ts.worker({"interop-cancel-ts": "sleep:1500"}, pollInterval=50)
    await eventually(lambda: runs_of(mongo_db, job.id), message="TS started it")
    requested = await monque.cancel_job(job.id)
    assert requested.status is JobStatus.PROCESSING  # asked; the holder decides
    await eventually(status_is(mongo_db, job.id, "completed"), timeout=15)
    await worker.stop()
    assert [r["outcome"] for r in runs_of(mongo_db, job.id)] == ["ok"]

    gate = asyncio.Event()

    async def slow(j: Job[Any]) -> None:
        await asyncio.wait_for(gate.wait(), 10)

    py_job = await monque.enqueue("interop-cancel-py")
    monque.worker("interop-cancel-py", slow)
    await monque.start()
    await eventually(status_is(mongo_db, py_job.id, "processing"))
    with pytest.raises(TsOpError) as refused:
        await ts.op("cancelJob", id=py_job.id)
    assert refused.value.name == "JobStateError"
    # Python's own cancel reaches its running handler.
    await monque.cancel_job(py_job.id)
    await eventually(status_is(mongo_db, py_job.id, "cancelled"), timeout=10)
    await monque.stop()


async def test_row12_a_ts_worker_reschedules_in_the_node_process_zone(
    ts: TsHarness, mongo_db: Database[dict[str, Any]], async_mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    """TS ignores ``timezone``: a Berlin schedule run by a TS worker in New York gets New
    York's 09:00 (documented limit; the workaround is TZ= on the Node side)."""
    monque = Monque(async_mongo_db, **FAST)
    job = await monque.schedule("0 9 * * *", "interop-tz", timezone="Europe/Berlin")
    made_due = datetime.now(UTC) - timedelta(seconds=1)
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"nextRunAt": made_due}})
    worker = await ts.worker({"interop-tz": "ok"}, pollInterval=50, env={"TZ": "America/New_York"})
    after = await eventually(
        lambda: (
            (d := stored(mongo_db, job.id))["status"] == "pending"
            and d["nextRunAt"] > made_due.replace(tzinfo=None)
            and d
        ),
        message="rescheduled by TS",
    )
    await worker.stop()
    upcoming = after["nextRunAt"].replace(tzinfo=UTC)
    assert upcoming == next_run("0 9 * * *", made_due, "America/New_York")
    assert upcoming != next_run("0 9 * * *", made_due, "Europe/Berlin")
    assert after["timezone"] == "Europe/Berlin", "the field stays; only TS ignores it"


def _random_cron(rnd: random.Random) -> str:
    """An expression from the whole grammar both parsers share, many of them invalid."""
    bounds = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    names: list[list[str] | None] = [None, None, None, None, MONTHS, DAYS]

    def value(i: int) -> str:
        choices = names[i]
        if choices is not None and rnd.random() < 0.3:
            return rnd.choice(choices)
        return str(rnd.randint(*bounds[i]))

    def item(i: int) -> str:
        high = bounds[i][1]
        k = rnd.random()
        if k < 0.2:
            return "*"
        if k < 0.35:
            return f"*/{rnd.randint(1, high)}"
        if k < 0.55:
            return value(i)
        if k < 0.75:
            return f"{value(i)}-{value(i)}"
        if k < 0.9:
            return f"{value(i)}-{value(i)}/{rnd.randint(1, max(high // 2, 1))}"
        return f"{value(i)}/{rnd.randint(1, max(high // 2, 1))}"

    fields = range(6) if rnd.random() < 0.3 else range(1, 6)
    return " ".join(
        ",".join(item(i) for _ in range(1 if rnd.random() < 0.8 else 2)) for i in fields
    )


MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
REFS = [
    datetime(2024, 2, 28, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2025, 6, 15, 8, 59, 30, tzinfo=UTC),
    datetime(2026, 3, 1, tzinfo=UTC),
]


async def test_row4_every_cron_python_accepts_runs_at_the_same_times_in_cron_parser(
    ts: TsHarness,
) -> None:
    """A differential fuzz: 3,000 random expressions; every one check_cron() accepts must be
    accepted by cron-parser as stored and give the same next 8 runs from 4 reference times."""
    rnd = random.Random(20261129)
    accepted: dict[str, str] = {}
    for _ in range(3000):
        expr = _random_cron(rnd)
        try:
            accepted[expr] = check_cron(expr)
        except InvalidCronError:
            continue
    assert len(accepted) > 200
    stored_forms = sorted(set(accepted.values()))
    theirs = await ts.run(
        "cronruns.mjs",
        exprs=stored_forms,
        refs=[r.isoformat() for r in REFS],
        n=8,
        env={"TZ": "UTC"},
        timeout=120,
    )
    problems = []
    for expr, form in accepted.items():
        result = theirs[form]
        if not result["ok"]:
            problems.append(f"{expr!r} (stored {form!r}): cron-parser refuses: {result['error']}")
            continue
        for ref, their_runs in zip(REFS, result["runs"], strict=True):
            ours, current = [], ref
            for _ in range(8):
                current = next_run(form, current)
                ours.append(current.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            if ours != their_runs:
                problems.append(f"{expr!r} from {ref}: ours {ours[:2]} theirs {their_runs[:2]}")
                break
    assert not problems, "\n".join(problems[:20])
