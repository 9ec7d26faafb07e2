"""Dashboard page times over a seeded collection of 10k and 100k jobs: prints a table.

    .venv/bin/python -m benchmarks.dashboard [--sizes 10000,100000] [--repeat 5] [--uri URI]

Runs against ``--uri`` / $MONGODB_URI or an embedded SecantusDB started here (in memory).
For each size a fresh collection is seeded with realistic jobs (8 names; 70% completed, 10%
failed, 15% pending, 3% cancelled, 2% processing; creation times over the last 7 days, 5% in
the last hour; 24 recurring schedules), the engine's indexes are built, then the app of
``monque.dashboard.create_app`` is driven in process through ``httpx.ASGITransport``. The
dashboard's own indexes are built by its first request: timed apart ("index build"). Each
page is timed as the median of ``--repeat`` requests after one warm-up; commands per request
are counted with a ``pymongo.monitoring.CommandListener`` over the timed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import platform
import random
import re
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from benchmarks.counting import CommandCounter
from monque.cron import next_run
from monque.dashboard import app as dashboard_app
from monque.dashboard import create_app
from monque.storage.indexes import INDEXES
from monque.testing import free_port

BATCH = 5_000
DATABASE = "bench_dashboard"
COLLECTION = "monque_jobs"
# (name, weight): a few busy names, a few quiet ones.
NAMES = (
    ("send-email", 30),
    ("resize-image", 18),
    ("sync-crm", 14),
    ("charge-card", 12),
    ("webhook-deliver", 10),
    ("generate-report", 7),
    ("index-document", 6),
    ("cleanup-tmp", 3),
)
STATUSES = (
    ("completed", 70),
    ("failed", 10),
    ("pending", 15),
    ("cancelled", 3),
    ("processing", 2),
)
REASONS = (
    "TimeoutError: handler exceeded its 30s timeout",
    "ConnectionError: upstream refused the connection",
    "ValueError: payload is missing 'email'",
    "HTTPStatusError: 503 Service Unavailable from https://hooks.example.com",
    "KeyError: 'customer_id'",
)
CRONS = ("*/5 * * * *", "0 * * * *", "0 3 * * *", "*/15 9-17 * * 1-5")
LIVE_INSTANCES = ("web-1:4121:a1f3", "web-2:3377:9c2e", "worker-1:812:77d0")
DEAD_INSTANCE = "worker-0:640:0b1d"  # holds some processing jobs, no longer registered
SCHEDULES_PER_NAME = 3
DEEP_PAGE = 20


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- the server -----------------------------------------------------------------------------


@contextmanager
def embedded_server(timeout: float = 30.0) -> Iterator[str]:
    """A SecantusDB wire server in its own process, in memory; yields its URI."""
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            ":memory:",
            "--enable-test-commands",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        probe: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"embedded server exited with {proc.returncode}")
                try:
                    probe.admin.command("ping")
                    break
                except PyMongoError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"embedded server not ready after {timeout}s") from None
                    time.sleep(0.05)
        finally:
            probe.close()
        yield uri
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


# -- seeding --------------------------------------------------------------------------------


def object_id(rng: random.Random, at: datetime) -> ObjectId:
    """An id created at ``at``: its four time bytes, then random bytes."""
    return ObjectId(struct.pack(">I", int(at.timestamp())) + rng.randbytes(8))


def job_document(rng: random.Random, at: datetime, status: str, name: str) -> dict[str, Any]:
    """One job as the engine would have left it in ``status``."""
    week = timedelta(days=7).total_seconds()
    ago = rng.uniform(0, 3600) if rng.random() < 0.05 else rng.uniform(0, week)
    created = at - timedelta(seconds=ago)
    started = min(created + timedelta(seconds=rng.uniform(0.01, 5)), at)
    finished = min(started + timedelta(seconds=rng.uniform(0.05, 20)), at)
    doc: dict[str, Any] = {
        "_id": object_id(rng, created),
        "name": name,
        "data": {
            "userId": rng.randrange(1_000_000),
            "ref": f"ord_{rng.randrange(16**8):08x}",
            "priority": rng.choice(("low", "normal", "high")),
        },
        "status": status,
        "nextRunAt": created,
        "priority": 0,
        "failCount": 0,
        "createdAt": created,
        "updatedAt": created,
    }
    if status == "completed":
        doc |= {"startedAt": started, "completedAt": finished, "updatedAt": finished}
        if rng.random() < 0.05:  # succeeded after a retry
            doc |= {"failCount": 1, "failReason": rng.choice(REASONS), "failedAt": started}
    elif status == "failed":
        reason = rng.choice(REASONS)
        doc |= {
            "startedAt": started,
            "failedAt": finished,
            "updatedAt": finished,
            "failCount": 10,
            "failReason": reason,
            "failTraceback": (
                "Traceback (most recent call last):\n"
                '  File "app/tasks.py", line 42, in handle\n'
                "    result = await client.call(job.data)\n"
                f"{reason}\n"
            ),
        }
    elif status == "pending":
        doc["nextRunAt"] = at + timedelta(seconds=rng.uniform(-60, 3600))
        if rng.random() < 0.2:  # waiting for a retry
            doc |= {
                "failCount": rng.randint(1, 4),
                "failReason": rng.choice(REASONS),
                "failedAt": finished,
                "updatedAt": finished,
            }
    elif status == "cancelled":
        doc |= {"cancelledAt": finished, "updatedAt": finished}
    elif status == "processing":
        locked = at - timedelta(seconds=rng.uniform(0, 60))
        doc |= {
            "startedAt": locked,
            "lockedAt": locked,
            "lastHeartbeat": locked,
            "lockExpiresAt": locked + timedelta(minutes=5),
            "claimedBy": rng.choice((*LIVE_INSTANCES, DEAD_INSTANCE)),
            "claimToken": f"{rng.randrange(16**12):012x}",
            "updatedAt": locked,
        }
    return doc


def schedule_document(
    rng: random.Random, at: datetime, name: str, cron: str, k: int
) -> dict[str, Any]:
    zone = rng.choice((None, "Europe/Berlin", "America/New_York"))
    created = at - timedelta(days=rng.uniform(7, 30))
    last = at - timedelta(minutes=rng.uniform(1, 60))
    return {
        "_id": object_id(rng, created),
        "name": name,
        "data": {"scope": "all"},
        "status": "pending",
        "nextRunAt": next_run(cron, at, zone),
        "priority": 0,
        "failCount": 0,
        "repeatInterval": cron,
        "timezone": zone,
        "uniqueKey": f"schedule:{name}:{k}",
        "createdAt": created,
        "updatedAt": last,
        "startedAt": last,
        "completedAt": last,
    }


def seed(db: Any, count: int, rng: random.Random) -> None:
    """``count`` jobs (schedules among them), the engine's indexes, three live instances."""
    db.drop_collection(COLLECTION)
    db.drop_collection(f"{COLLECTION}_instances")
    jobs = db[COLLECTION]
    at = now()
    names = [n for n, _ in NAMES]
    schedules = [
        schedule_document(rng, at, name, CRONS[(i + k) % len(CRONS)], k)
        for i, name in enumerate(names)
        for k in range(SCHEDULES_PER_NAME)
    ]
    plain = count - len(schedules)
    statuses = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES], k=plain)
    picked = rng.choices(names, [w for _, w in NAMES], k=plain)
    batch: list[dict[str, Any]] = list(schedules)
    for status, name in zip(statuses, picked, strict=True):
        batch.append(job_document(rng, at, status, name))
        if len(batch) == BATCH:
            jobs.insert_many(batch, ordered=False)
            batch = []
    if batch:
        jobs.insert_many(batch, ordered=False)
    jobs.create_indexes(INDEXES)
    db[f"{COLLECTION}_instances"].insert_many(
        [
            {
                "_id": instance,
                "host": instance.split(":")[0],
                "pid": int(instance.split(":")[1]),
                "startedAt": at - timedelta(hours=2),
                "lastSeen": at,
                "expiresAt": at + timedelta(hours=6),  # live for the whole run
            }
            for instance in LIVE_INSTANCES
        ]
    )


# -- timing ---------------------------------------------------------------------------------


@dataclass
class PageFigures:
    ms: float
    commands: float
    by_name: dict[str, float] = field(default_factory=dict)


OLDER = re.compile(r'href="([^"]*)" id="older"')


async def timed(
    client: httpx.AsyncClient, counter: CommandCounter, url: str, repeat: int
) -> tuple[PageFigures, str]:
    """Median of ``repeat`` requests after one warm-up; commands per request; the page."""
    response = await client.get(url)
    if response.status_code != 200:
        raise AssertionError(f"GET {url}: {response.status_code}\n{response.text[:2000]}")
    samples = []
    counter.reset()
    for _ in range(repeat):
        start = time.perf_counter()
        response = await client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise AssertionError(f"GET {url}: {response.status_code}\n{response.text[:2000]}")
    commands = counter.reset()
    return (
        PageFigures(
            ms=statistics.median(samples),
            commands=sum(commands.values()) / repeat,
            by_name={k: v / repeat for k, v in sorted(commands.items())},
        ),
        response.text,
    )


def older_link(page: str) -> str:
    found = OLDER.search(page)
    if found is None:
        raise AssertionError("the jobs page has no 'older' link")
    return html.unescape(found.group(1))


async def measure(uri: str, count: int, repeat: int) -> dict[str, Any]:
    rng = random.Random(count)
    sync_client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        start = time.perf_counter()
        seed(sync_client[DATABASE], count, rng)
        seed_s = time.perf_counter() - start
        jobs = sync_client[DATABASE][COLLECTION]
        middle = jobs.find_one({"status": "failed"}, skip=count // 20, projection={"_id": 1})
        assert middle is not None
        detail_id = middle["_id"]
    finally:
        sync_client.close()

    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, event_listeners=[counter])
    try:
        app = create_app(client[DATABASE])
        dashboard = app.state.dashboard
        counter.reset()
        start = time.perf_counter()
        await dashboard.ready()  # what the first request does first: clock, dashboard indexes
        index_ms = (time.perf_counter() - start) * 1000
        index_commands = sum(counter.reset().values())

        window_end = now() - timedelta(days=3)
        window = urlencode(
            {
                "from": (window_end - timedelta(hours=1)).isoformat(timespec="seconds"),
                "to": window_end.isoformat(timespec="seconds"),
            }
        )
        name = NAMES[0][0]
        pages: dict[str, PageFigures] = {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            # Every page computed afresh; the overview's shared figures are timed apart below.
            shared_for, dashboard_app.OVERVIEW_MAX_AGE = dashboard_app.OVERVIEW_MAX_AGE, 0.0
            for label, url in (
                ("/ (overview)", "/"),
                ("/jobs", "/jobs"),
                ("/jobs?status=failed", "/jobs?status=failed"),
                ("/jobs?name=", f"/jobs?name={name}"),
                ("/jobs?name=&status=pending", f"/jobs?name={name}&status=pending"),
                ("/jobs?reason=timeout&status=failed", "/jobs?reason=timeout&status=failed"),
                ("/jobs?from=&to= (1 h)", f"/jobs?{window}"),
                ("/jobs/<id> (detail)", f"/jobs/{detail_id}"),
                ("/schedules", "/schedules"),
                ("/bulk?action=retry&status=failed", "/bulk?action=retry&status=failed"),
            ):
                pages[label], _ = await timed(http, counter, url, repeat)
            # Keyset paging: follow 'older' links down to page DEEP_PAGE, time the last one.
            url = "/jobs"
            for _ in range(DEEP_PAGE - 1):
                response = await http.get(url)
                assert response.status_code == 200, (url, response.status_code)
                url = older_link(response.text)
            pages[f"/jobs page {DEEP_PAGE} (before=)"], _ = await timed(http, counter, url, repeat)
            dashboard_app.OVERVIEW_MAX_AGE = shared_for
            pages[SHARED], _ = await timed(http, counter, "/", repeat)
    finally:
        await client.drop_database(DATABASE)
        await client.close()
    return {
        "jobs": count,
        "seed_s": seed_s,
        "index_ms": index_ms,
        "index_commands": index_commands,
        "name": name,
        "pages": pages,
    }


# -- report ---------------------------------------------------------------------------------


SHARED = "/ (overview, figures < 2 s old)"
ORDER = (
    "/ (overview)",
    SHARED,
    "/jobs",
    f"/jobs page {DEEP_PAGE} (before=)",
    "/jobs?status=failed",
    "/jobs?name=",
    "/jobs?name=&status=pending",
    "/jobs?reason=timeout&status=failed",
    "/jobs?from=&to= (1 h)",
    "/jobs/<id> (detail)",
    "/schedules",
    "/bulk?action=retry&status=failed",
)


def size_label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def print_table(server: str, runs: list[dict[str, Any]]) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\nserver: {server}\nmachine: {machine}\nwhen: {now().isoformat(timespec='seconds')}")
    print(f"name filter: {runs[0]['name']!r}; times: median ms of the timed requests\n")
    heads = [f"N={size_label(r['jobs'])} ms" for r in runs]
    width = max(len(p) for p in ORDER) + 2
    print(f"{'page':<{width}}" + "".join(f"{h:>14}" for h in heads) + f"{'commands':>10}")
    print(f"{'':<{width}}" + "".join(f"{'':>14}" for _ in heads) + f"{'(last N)':>10}")
    print(
        f"{'seeding, s (with engine indexes)':<{width}}"
        + "".join(f"{r['seed_s']:>14.1f}" for r in runs)
        + f"{'':>10}"
    )
    print(
        f"{'index build':<{width}}"
        + "".join(f"{r['index_ms']:>14.1f}" for r in runs)
        + f"{runs[-1]['index_commands']:>10}"
    )
    for page in ORDER:
        figures = [r["pages"][page] for r in runs]
        commands = figures[-1].commands
        print(
            f"{page:<{width}}" + "".join(f"{f.ms:>14.1f}" for f in figures) + f"{commands:>10.0f}"
        )
    print("\ncommands per request, by name (largest size):")
    for page in ORDER:
        by_name = runs[-1]["pages"][page].by_name
        print(f"  {page}: " + ", ".join(f"{k} {v:g}" for k, v in by_name.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="10000,100000", help="jobs to seed, comma-separated (10000,100000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page (5)")
    parser.add_argument(
        "--uri",
        default=os.environ.get("MONGODB_URI"),
        help="a real mongod (default: $MONGODB_URI, else an embedded server started here)",
    )
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    runs: list[dict[str, Any]] = []

    def run_all(uri: str) -> None:
        for count in sizes:
            print(f"seeding and measuring {count} jobs ...", file=sys.stderr, flush=True)
            runs.append(asyncio.run(measure(uri, count, args.repeat)))

    if args.uri:
        run_all(args.uri)
        server = "MONGODB_URI"
    else:
        with embedded_server() as uri:
            run_all(uri)
        server = "embedded SecantusDB, in memory (a test surrogate: scans whole index ranges)"
    print_table(server, runs)


if __name__ == "__main__":
    main()
