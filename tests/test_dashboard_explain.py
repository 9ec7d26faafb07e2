"""Every list and count query of the dashboard is index-backed: no collection scan, no
in-memory sort. Runs on a real mongod (MONGODB_URI); the embedded server's explain() always
shows a SORT stage, so it proves nothing there."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

pytest.importorskip("starlette")
from monque import Monque
from monque.dashboard.queries import DASHBOARD_INDEXES, explainable
from monque.storage.indexes import ensure_models


def stages(plan: Any) -> Iterator[Mapping[str, Any]]:
    """Every stage of a (classic or SBE) winning plan."""
    if isinstance(plan, Mapping):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from stages(value)


def winning(explained: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The winning plans of an explain answer (an aggregation nests them per stage)."""
    found = []
    for key, value in explained.items():
        if key == "winningPlan":
            found.append(value)
        elif isinstance(value, Mapping):
            found += winning(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    found += winning(item)
    return found


def test_the_plan_walk_finds_scans_and_sorts() -> None:
    # A recorded shape (classic engine): SORT over a COLLSCAN must be seen.
    bad = {
        "queryPlanner": {
            "winningPlan": {
                "stage": "SORT",
                "inputStage": {"stage": "COLLSCAN", "direction": "forward"},
            }
        }
    }
    names = [s["stage"] for plan in winning(bad) for s in stages(plan)]
    assert names == ["SORT", "COLLSCAN"]
    nested = {"stages": [{"$cursor": {"queryPlanner": {"winningPlan": {"queryPlan": bad}}}}]}
    assert [s["stage"] for p in winning(nested) for s in stages(p)][:1] == ["SORT"]


@pytest.mark.mongod
def test_every_dashboard_query_is_index_backed(
    mongo_db: Database[dict[str, Any]], mongodb_server: object
) -> None:
    if mongodb_server is not None:
        pytest.skip("explain() of the embedded server always shows a SORT stage")
    engine = Monque(mongo_db)
    engine.initialize_sync()
    engine.jobs.run_sync(ensure_models(DASHBOARD_INDEXES))
    now = datetime.now(timezone.utc)
    docs = []
    for i in range(400):
        status = ("pending", "processing", "completed", "failed", "cancelled")[i % 5]
        doc: dict[str, Any] = {
            "_id": ObjectId.from_datetime(now - timedelta(minutes=i)),
            "name": f"n{i % 4}",
            "status": status,
            "nextRunAt": now,
            "createdAt": now,
            "data": {},
        }
        if status == "completed":
            doc["completedAt"] = now - timedelta(minutes=i % 90)
        if status == "failed":
            doc.update(failedAt=now, failReason="boom")
        if i % 50 == 0:
            doc["repeatInterval"] = "*/5 * * * *"
        docs.append(doc)
    mongo_db.monque_jobs.insert_many(docs)
    for label, command in explainable("monque_jobs", now, "n1"):
        explained = mongo_db.command({"explain": command, "verbosity": "queryPlanner"})
        plans = winning(explained)
        assert plans, (label, explained)
        names = {s["stage"] for plan in plans for s in stages(plan)}
        assert "COLLSCAN" not in names, (label, plans)
        assert "SORT" not in names, (label, plans)
        assert names & {"IXSCAN", "COUNT_SCAN", "DISTINCT_SCAN", "EXPRESS_IXSCAN"}, (label, plans)


def test_every_listed_command_runs_on_the_server(mongo_db: Database[dict[str, Any]]) -> None:
    """The explain list is the dashboard's real commands: each one runs (hints name existing
    indexes, pipelines are valid), here too."""
    engine = Monque(mongo_db)
    engine.initialize_sync()
    engine.jobs.run_sync(ensure_models(DASHBOARD_INDEXES))
    now = datetime.now(timezone.utc)
    mongo_db.monque_jobs.insert_one(
        {"name": "n1", "status": "failed", "failReason": "boom", "failedAt": now, "data": {}}
    )
    commands = explainable("monque_jobs", now, "n1")
    assert len(commands) >= 20
    for label, command in commands:
        answer = mongo_db.command(command)
        assert answer["ok"] == 1, label
