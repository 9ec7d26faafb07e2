"""The ``monque`` commands at 80 columns, with rich markup characters in the data."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import ObjectId
from click.testing import CliRunner, Result
from pymongo.database import Database

from monque import Monque
from monque.cli import cli
from monque.testing.server import free_port

NAMES = ["report[/x]", "[bold]digest[/bold]", "[red]x[/red]"]
HEX_ID = re.compile(r"\b[0-9a-f]{24}\b")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "80", "MONGODB_URI": None, "MONQUE_DB": None})


@pytest.fixture
def run(runner: CliRunner, mongodb_uri: str, mongo_db_name: str) -> Any:
    """Invoke ``monque`` on the test's database, the options before the subcommand."""

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["--uri", mongodb_uri, "--db", mongo_db_name, *args])

    return invoke


def _failed(db: Database[dict[str, Any]], job_id: ObjectId, reason: str, **more: Any) -> None:
    """What a worker stores for a job that failed for good."""
    now = datetime.now(timezone.utc)
    db.monque_jobs.update_one(
        {"_id": job_id},
        {
            "$set": {
                "status": "failed",
                "failCount": 3,
                "failReason": reason,
                "failedAt": now,
                "updatedAt": now,
                **more,
            }
        },
    )


def _lines_fit(output: str, width: int = 80) -> None:
    for line in output.splitlines():
        assert len(line) <= width, line


# -- 1. data is printed literally, never read as markup ----------------------------------


def test_markup_in_names_data_keys_and_reasons_is_printed_literally(
    run: Any, mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    stored = run("enqueue", "report[/x]", "--data", '{"note": "[/b] [bold]x"}')
    assert stored.exit_code == 0, stored.output
    assert "enqueued report[/x] " in stored.output
    keyed = run("enqueue", "[bold]digest[/bold]", "--unique-key", "[red]k[/red]")
    assert keyed.exit_code == 0 and "[bold]digest[/bold]" in keyed.output
    again = run("enqueue", "[bold]digest[/bold]", "--unique-key", "[red]k[/red]")
    assert "already queued [bold]digest[/bold]" in again.output

    job = mongo_db.monque_jobs.find_one({"name": "report[/x]"})
    assert job is not None
    _failed(
        mongo_db,
        job["_id"],
        "KeyError: '[/a]'",
        failTraceback="Traceback (most recent call last):\nKeyError: '[/a]'\n",
    )
    listed = run("jobs", "list")
    assert listed.exit_code == 0, listed.output
    assert "report[/x]" in listed.output and "[bold]" in listed.output
    assert "KeyErr" in listed.output
    wide = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["--uri", mongodb_uri, "--db", mongo_db.name, "jobs", "list"]
    )
    assert "[bold]digest[/bold]" in wide.output and "KeyError: '[/a]'" in wide.output

    shown = run("jobs", "show", str(job["_id"]))
    assert shown.exit_code == 0, shown.output
    assert '"note": "[/b] [bold]x"' in shown.output
    assert "failReason: KeyError: '[/a]'" in shown.output
    assert "KeyError: '[/a]'\n" in shown.output.split("failTraceback:")[1]

    # An error message quoting the data: one line, literal.
    bad_name = run("enqueue", "[/x] y")
    assert bad_name.exit_code == 1 and "'[/x] y'" in bad_name.output
    assert "Traceback" not in bad_name.output


# -- 2. at 80 columns the id is never cut; the reason is -------------------------------------


def test_tables_at_80_columns_keep_the_id_whole_and_cut_the_reason(
    run: Any, mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = Monque(mongo_db)
    long_name = "send-a-rather-long-welcome-email-to-a-new-customer"
    ids = [str(monque.enqueue_sync(name).id) for name in [*NAMES, long_name]]
    reason = "ConnectionError: the mail relay at smtp.example.com refused the message " * 3
    _failed(mongo_db, ObjectId(ids[-1]), reason)
    listed = run("jobs", "list")
    assert listed.exit_code == 0, listed.output
    _lines_fit(listed.output)
    assert sorted(HEX_ID.findall(listed.output)) == sorted(ids)
    assert "Connect" in listed.output and "…" in listed.output
    assert reason.strip() not in listed.output

    monque.schedule_sync("0 9 * * *", long_name, timezone="America/Argentina/Buenos_Aires")
    monque.schedule_sync("*/5 * * * *", "[bold]sync[/bold]", unique_key="[red]tenant-42[/red]")
    recurring = mongo_db.monque_jobs.find({"repeatInterval": {"$exists": True}})
    schedule_ids = [str(d["_id"]) for d in recurring]
    table = run("schedules")
    assert table.exit_code == 0, table.output
    _lines_fit(table.output)
    assert sorted(HEX_ID.findall(table.output)) == sorted(schedule_ids)
    assert "America/Argentina/" in table.output and "[red]tenant-42[/red]" in table.output
    wide = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["--uri", mongodb_uri, "--db", mongo_db.name, "schedules"]
    )
    assert "[bold]sync[/bold]" in wide.output and "[red]tenant-42[/red]" in wide.output
    assert long_name in wide.output and "America/Argentina/Buenos_Aires" in wide.output


# -- 3. global options anywhere, --version, -h ---------------------------------------------------


def test_global_options_before_or_after_the_subcommand(
    runner: CliRunner, mongodb_uri: str, mongo_db_name: str, mongo_db: Database[dict[str, Any]]
) -> None:
    Monque(mongo_db).enqueue_sync("x")
    for args in (
        ["--uri", mongodb_uri, "--db", mongo_db_name, "--json", "jobs", "list"],
        ["jobs", "list", "--json", "--uri", mongodb_uri, "--db", mongo_db_name],
        ["--uri", mongodb_uri, "jobs", "--db", mongo_db_name, "list", "--json"],
        ["jobs", "--json", "list", "--uri", mongodb_uri, "--db", mongo_db_name],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        assert [j["name"] for j in json.loads(result.stdout)["jobs"]] == ["x"], args
    stats = runner.invoke(cli, ["stats", "--json", "--uri", mongodb_uri, "--db", mongo_db_name])
    assert json.loads(stats.stdout)["counts"]["pending"] == 1
    schedules = runner.invoke(
        cli, ["schedules", "--json", "--uri", mongodb_uri, "--db", mongo_db_name]
    )
    assert schedules.exit_code == 0 and json.loads(schedules.stdout) == []

    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and re.search(r"monque, version \d", version.output)
    for args in (["-h"], ["jobs", "-h"], ["jobs", "list", "-h"], ["worker", "-h"]):
        helped = runner.invoke(cli, args)
        assert helped.exit_code == 0 and "Usage: monque" in helped.output, args


# -- 4. what retry, cancel and delete did --------------------------------------------------------


def test_retry_cancel_and_delete_say_what_they_did(
    run: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    monque = Monque(mongo_db)
    job = monque.enqueue_sync("report[/x]")
    cancelled = run("jobs", "cancel", str(job.id))
    assert cancelled.output.strip() == f"cancelled report[/x] {job.id}"
    retried = run("jobs", "retry", str(job.id))
    assert retried.output.strip().startswith(f"retried report[/x] {job.id}")
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"status": "processing"}})
    requested = run("jobs", "cancel", str(job.id))
    assert requested.exit_code == 0
    assert requested.output.startswith(f"cancellation requested report[/x] {job.id}")
    as_json = json.loads(run("--json", "jobs", "cancel", str(job.id)).stdout)
    assert as_json["action"] == "cancellation requested" and as_json["status"] == "processing"
    mongo_db.monque_jobs.update_one({"_id": job.id}, {"$set": {"status": "cancelled"}})
    deleted = run("jobs", "delete", str(job.id))
    assert deleted.output.strip() == f"deleted report[/x] {job.id}"
    assert mongo_db.monque_jobs.count_documents({}) == 0


# -- 5. show, empty results, --status, zero counts -----------------------------------------------


def test_show_renders_json_values_iso_times_and_the_traceback(
    run: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    ref = ObjectId()
    when = datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    job = Monque(mongo_db).enqueue_sync("x", {"ref": ref, "when": when, "n": [1, None]})
    _failed(mongo_db, job.id, "boom", failTraceback="Traceback (most recent call last):\nboom\n")
    shown = run("jobs", "show", str(job.id))
    assert shown.exit_code == 0, shown.output
    expected_data = {"ref": str(ref), "when": "2031-01-02T03:04:05.678+00:00", "n": [1, None]}
    data = shown.output.split("data: ", 1)[1].split("\nnextRunAt:", 1)[0]
    assert json.loads(data) == expected_data
    created = re.search(r"^createdAt: (\S+)$", shown.output, re.M)
    assert created is not None
    assert datetime.fromisoformat(created.group(1)).utcoffset() == timedelta(0)
    assert shown.output.endswith("failTraceback:\nTraceback (most recent call last):\nboom\n")
    as_json = json.loads(run("--json", "jobs", "show", str(job.id)).stdout)
    assert as_json["data"] == expected_data
    assert as_json["failTraceback"].startswith("Traceback") and as_json["failedAt"].endswith(
        "+00:00"
    )
    missing = run("jobs", "show", "0" * 24)
    assert missing.exit_code == 1 and "no job 000" in missing.output


def test_empty_results_status_in_any_case_and_zero_counts(
    run: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    assert run("jobs", "list").output.strip() == "no jobs"
    assert run("schedules").output.strip() == "no schedules"
    assert json.loads(run("--json", "jobs", "list").stdout) == {"jobs": [], "next_cursor": None}
    stats = json.loads(run("--json", "stats").stdout)
    assert stats["counts"] == dict.fromkeys(
        ["pending", "processing", "completed", "failed", "cancelled"], 0
    )
    assert stats["total"] == 0 and stats["workers"] == [] and stats["by_name"] == {}

    job = Monque(mongo_db).enqueue_sync("x")
    _failed(mongo_db, job.id, "boom")
    for status in ("FAILED", "Failed", "failed"):
        listed = json.loads(run("--json", "jobs", "list", "--status", status).stdout)
        assert [j["id"] for j in listed["jobs"]] == [str(job.id)], status
    assert run("jobs", "list", "--status", "PENDING").output.strip() == "no jobs (status pending)"
    bad = run("jobs", "list", "--status", "done")
    assert bad.exit_code == 2 and "done" in bad.output
    helped = run("jobs", "list", "-h").output
    assert all(s in helped for s in ("pending", "processing", "completed", "failed", "cancelled"))


# -- 6. connection errors ------------------------------------------------------------------------


def test_unreachable_server_and_invalid_uri_are_one_line(runner: CliRunner) -> None:
    port = free_port()
    down = runner.invoke(
        cli,
        ["--uri", f"mongodb://127.0.0.1:{port}/app", "--timeout", "0.3", "jobs", "list"],
    )
    assert down.exit_code == 1
    lines = down.output.strip().splitlines()
    assert len(lines) == 1, down.output
    assert f"cannot reach MongoDB at 127.0.0.1:{port} (waited 0.3s)" in lines[0]
    assert "Topology" not in down.output and "Traceback" not in down.output

    # A timeout the URI sets wins over the default --timeout (5 s).
    began = time.monotonic()
    own = runner.invoke(
        cli, ["--uri", f"mongodb://127.0.0.1:{port}/app?serverSelectionTimeoutMS=300", "stats"]
    )
    assert own.exit_code == 1 and "(waited 0.3s)" in own.output, own.output
    assert time.monotonic() - began < 4

    invalid = runner.invoke(cli, ["--uri", "not a uri", "stats"])
    assert invalid.exit_code == 2 and "invalid --uri 'not a uri'" in invalid.output
    assert "without a database" not in invalid.output
    secret = runner.invoke(cli, ["--uri", "mongodb://u:p@[bad", "stats"])
    assert secret.exit_code == 2 and "invalid --uri" in secret.output
    assert ":p@" not in secret.output
    no_db = runner.invoke(cli, ["--uri", f"mongodb://127.0.0.1:{port}", "stats"])
    assert no_db.exit_code == 2 and "no database: pass --db" in no_db.output


# -- 7. schedules remove -------------------------------------------------------------------------


def test_schedules_remove(run: Any, mongo_db: Database[dict[str, Any]]) -> None:
    monque = Monque(mongo_db)
    monque.schedule_sync("0 9 * * *", "digest[/x]")
    monque.schedule_sync("0 * * * *", "sync", unique_key="[red]t1[/red]")
    removed = run("schedules", "remove", "digest[/x]")
    assert removed.exit_code == 0 and removed.output.strip() == "removed schedule digest[/x]"
    again = run("schedules", "remove", "digest[/x]")
    assert again.exit_code == 1 and again.output.strip() == "no such schedule: digest[/x]"
    assert run("schedules", "remove", "sync").exit_code == 1  # it has its own key
    running = mongo_db.monque_jobs.find_one_and_update(
        {"name": "sync"}, {"$set": {"status": "processing"}}
    )
    assert running is not None
    refused = run("schedules", "remove", "sync", "--key", "[red]t1[/red]")
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "is running" in refused.output and "Traceback" not in refused.output
    mongo_db.monque_jobs.update_one({"_id": running["_id"]}, {"$set": {"status": "pending"}})
    done = json.loads(run("--json", "schedules", "remove", "sync", "--key", "[red]t1[/red]").stdout)
    assert done == {"name": "sync", "key": "[red]t1[/red]", "removed": 1}
    assert mongo_db.monque_jobs.count_documents({}) == 0
    assert run("schedules", "list").output.strip() == "no schedules"


# -- 8. stats --------------------------------------------------------------------------------


def test_stats_per_name_throughput_wait_from_due_time_and_workers(
    run: Any, mongo_db: Database[dict[str, Any]]
) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def done(name: str, minutes_ago: float, created_before: float, waited: float) -> dict[str, Any]:
        completed = now - timedelta(minutes=minutes_ago)
        started = completed - timedelta(seconds=1)
        due = started - timedelta(seconds=waited)
        return {
            "name": name,
            "status": "completed",
            "data": None,
            "nextRunAt": due,
            "createdAt": due - timedelta(hours=created_before),  # enqueued with a delay
            "startedAt": started,
            "completedAt": completed,
            "failCount": 0,
            "priority": 0,
        }

    mongo_db.monque_jobs.insert_many(
        [
            done("report[/x]", 1, 24, 2.0),
            done("report[/x]", 3, 0, 4.0),
            done("report[/x]", 10, 0, 6.0),
            done("mail", 30, 0, 8.0),
            {
                "name": "mail",
                "status": "failed",
                "nextRunAt": now,
                "failedAt": now - timedelta(minutes=2),
                "createdAt": now,
            },
            {
                "name": "mail",
                "status": "processing",
                "nextRunAt": now,
                "createdAt": now,
                "claimedBy": "host-a:42:abcd",
                "startedAt": now,
            },
            {
                "name": "mail",
                "status": "pending",
                "nextRunAt": now - timedelta(seconds=30),
                "createdAt": now,
            },
            {"name": "mail", "status": "pending", "nextRunAt": now + timedelta(days=1)},
        ]
    )
    mongo_db.monque_jobs_instances.insert_many(
        [
            {
                "_id": "host-a:42:abcd",
                "host": "host-a",
                "pid": 42,
                "startedAt": now - timedelta(hours=1),
                "lastSeen": now,
                "expiresAt": now + timedelta(seconds=30),
            },
            {  # its lease ran out: a crashed worker, not shown
                "_id": "host-b:7:dead",
                "host": "host-b",
                "pid": 7,
                "startedAt": now - timedelta(hours=2),
                "lastSeen": now - timedelta(hours=1),
                "expiresAt": now - timedelta(minutes=59),
            },
        ]
    )
    stats = json.loads(run("--json", "stats").stdout)
    assert stats["counts"] == {
        "pending": 2,
        "processing": 1,
        "completed": 4,
        "failed": 1,
        "cancelled": 0,
    }
    assert stats["by_name"]["report[/x]"] == {
        "pending": 0,
        "processing": 0,
        "completed": 3,
        "failed": 0,
        "cancelled": 0,
    }
    assert stats["by_name"]["mail"]["pending"] == 2
    assert stats["avg_wait"] == pytest.approx(5.0)  # from nextRunAt: not a day for the delayed
    assert stats["avg_run"] == pytest.approx(1.0)
    assert stats["due"] == 1 and stats["oldest_due"] >= 29
    assert stats["throughput"]["5m"] == {
        "completed": 2,
        "failed": 1,
        "completed_per_minute": 0.4,
        "failed_per_minute": 0.2,
    }
    assert stats["throughput"]["15m"]["completed"] == 3
    assert stats["throughput"]["15m"]["failed"] == 1
    [worker] = stats["workers"]
    assert worker["id"] == "host-a:42:abcd" and worker["host"] == "host-a"
    assert worker["pid"] == 42 and worker["running"] == 1
    assert worker["started"].endswith("+00:00") and worker["last_seen"].endswith("+00:00")

    one = json.loads(run("--json", "stats", "--name", "report[/x]").stdout)
    assert one["total"] == 3 and list(one["by_name"]) == ["report[/x]"]
    assert one["avg_wait"] == pytest.approx(4.0)

    table = run("stats")
    assert table.exit_code == 0, table.output
    _lines_fit(table.output)
    for fragment in ("report[/x]", "last 5 min", "last 15 min", "host-a:42:abcd", "1 due now"):
        assert fragment in table.output, fragment
    assert "host-b" not in table.output
