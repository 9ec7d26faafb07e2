"""Backoff arithmetic, option parsing and the indexes."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.database import Database

from monque import Monque, MonqueOptions
from monque.backoff import retry_delay
from monque.job import Job
from monque.lifecycle import failure_update, new_document
from monque.storage.jobs import CLAIM_SORT


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [retry_delay(n, 60, 24 * 3600) for n in range(1, 5)] == [120, 240, 480, 960]
    assert retry_delay(20, 60, 3600) == 3600
    assert retry_delay(10_000, 60, 3600) == 3600, "no overflow for huge fail counts"


@given(
    fail_count=st.integers(0, 200),
    base=st.floats(0.001, 3600),
    cap_factor=st.floats(1, 10_000),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_backoff_property(
    fail_count: int, base: float, cap_factor: float, jitter: float, seed: int
) -> None:
    cap = base * cap_factor
    delay = retry_delay(fail_count, base, cap, jitter, random.Random(seed))
    assert 0 < delay <= cap
    exact = min(2 ** min(fail_count, 62) * base, cap)
    assert delay >= exact * (1 - jitter) - 1e-9


def test_defaults_and_durations() -> None:
    options = MonqueOptions.from_kwargs(lock_timeout=timedelta(minutes=2), poll_interval=0.5)
    assert options.lock_timeout == 120 and options.poll_interval == 0.5
    assert options.backoff_base == 60 and options.max_retries == 10
    assert options.shutdown_timeout == 30 and options.collection == "monque_jobs"
    assert str(os.getpid()) in options.instance_id


def test_failure_arithmetic() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    options = MonqueOptions.from_kwargs(max_retries=3)
    doc = new_document("j", None, now=now, run_at=now)
    job = Job.from_document(doc)
    first = failure_update(job, now, "x", options.retry_policy)
    assert first.will_retry and first.next_run_at == now + timedelta(minutes=2)
    job.fail_count = 2
    last = failure_update(job, now, "x", options.retry_policy)
    assert not last.will_retry and last.update["$set"]["status"] == "failed"


async def test_initialize_creates_the_three_indexes(mongo_db: Database[dict[str, Any]]) -> None:
    monque = Monque(mongo_db)
    await monque.initialize()
    await monque.initialize()
    info = mongo_db.monque_jobs.index_information()
    assert {"monque_claim", "name_1_uniqueKey_1", "monque_leases"} <= info.keys()
    assert info["name_1_uniqueKey_1"]["unique"] is True
    skip = Monque(mongo_db, collection="other", create_indexes=False)
    skip.initialize_sync()
    assert "other" not in mongo_db.list_collection_names()


@pytest.mark.mongod
def test_claim_query_uses_the_index_without_a_sort_stage(
    mongo_db: Database[dict[str, Any]], mongodb_server: object
) -> None:
    if mongodb_server is not None:
        pytest.skip("explain() of the embedded server always shows a SORT stage")
    Monque(mongo_db).initialize_sync()
    now = datetime.now(timezone.utc)
    mongo_db.monque_jobs.insert_many(
        [new_document(n, None, now=now, run_at=now) for n in ("a", "b", "c") for _ in range(20)]
    )
    plan = (
        mongo_db.monque_jobs.find(
            {"name": {"$in": ["a", "b"]}, "status": "pending", "nextRunAt": {"$lte": now}}
        )
        .sort(CLAIM_SORT)
        .limit(1)
        .explain()
    )
    text = str(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in text and "monque_claim" in text
    assert "'stage': 'SORT'" not in text
    # The next-due read: the first key of each name's range, merged (SORT_MERGE), no sort.
    plan = (
        mongo_db.monque_jobs.find(
            {"name": {"$in": ["a", "b"]}, "status": "pending", "nextRunAt": {"$type": "date"}}
        )
        .sort([("nextRunAt", 1)])
        .limit(1)
        .explain()
    )
    text = str(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in text and "monque_next_due" in text
    assert "'stage': 'SORT'" not in text
