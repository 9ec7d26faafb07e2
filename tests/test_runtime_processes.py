"""The runtime as separate OS processes see it: a host clock 25 s ahead (Debian's ``faketime``),
a stop with a handler that never returns, and a second Ctrl-C."""
# faketime shifts the whole process's wall clock: the honest test of skew between hosts.

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from monque import Events, Job, JobStateError, Monque
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Debian's faketime package: the library is preloaded into the worker's own process (the
# faketime command forks, so signals sent to it would not reach the worker).
FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)


def _skewed(env: dict[str, str], seconds: int = 25) -> dict[str, str]:
    assert FAKETIME is not None
    return {**env, "LD_PRELOAD": FAKETIME, "FAKETIME": f"+{seconds}s"}


def _end(proc: subprocess.Popen[bytes] | None, *, graceful: bool = True) -> None:
    """Stop a worker process: SIGTERM, then SIGKILL after 20 s. Under libfaketime 0.9.10 the
    monotonic clock is shifted too and threads' timed waits overrun, so a skewed worker is
    killed outright."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("COVERAGE_PROCESS_START", None)
    return env


def _spawn(command: list[str], args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*command, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE)


@pytest.mark.skipif(FAKETIME is None, reason="needs Debian's faketime (.ci/run installs it)")
@pytest.mark.timeout(120)
async def test_a_worker_whose_host_clock_is_25s_ahead(
    make_monque: MakeMonque, mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    """It neither takes a healthy job from another host nor starts a delayed job early."""
    assert FAKETIME is not None
    # A 6 s lease: the skewed host's 25 s dwarfs it, and a loaded CI host's late renewal
    # cannot expire it for real while the test watches.
    healthy = make_monque(lock_timeout=6.0, heartbeat_interval=0.5, worker_concurrency=1)
    events = Recorder().listen(healthy, Events.JOB_LOST, Events.JOB_COMPLETE)
    release = threading.Event()
    started = threading.Event()

    @healthy.worker("proc-job")
    def long(job: Job[Any]) -> None:
        started.set()
        release.wait(30)

    held = await healthy.now("proc-job")
    await healthy.start()
    await eventually(started.is_set)
    options = {
        "poll_interval": 0.05,
        "lock_timeout": 2.0,
        "heartbeat_interval": 0.5,
        "recovery_interval": 0.2,
    }
    env = _skewed(_env(MONQUE_TEST_OPTIONS=json.dumps(options), MONQUE_TEST_WORK="0.01"))
    # libfaketime 0.9.10 also shifts the monotonic clock (FAKETIME_DONT_FAKE_MONOTONIC=1 makes
    # Python's time.sleep fail there), so the skewed worker is asyncio-only: see async_worker.
    proc = _spawn(
        [sys.executable, "-m", "tests.procs.async_worker"],
        [mongodb_uri, mongo_db.name, "skewed"],
        env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        # Past the lease as the skewed host would judge it (25 s), many sweeps of its.
        await asyncio.sleep(3)
        doc = mongo_db.monque_jobs.find_one({"_id": held.id})
        assert doc is not None and doc["status"] == "processing"
        assert doc["claimedBy"] == healthy.instance_id and doc["failCount"] == 0
        assert mongo_db.runs.count_documents({}) == 0, "the skewed host ran nothing"
        release.set()
        await events.wait_for(Events.JOB_COMPLETE)
        await healthy.stop()
        assert not events.of(Events.JOB_LOST)

        began = time.monotonic()
        delayed = await healthy.enqueue("proc-job", delay=3)
        await eventually(lambda: time.monotonic() - began > 2.5, interval=0.05)
        doc = mongo_db.monque_jobs.find_one({"_id": delayed.id})
        assert doc is not None and doc["status"] == "pending", "not started 22 s early"
        await eventually(
            lambda: mongo_db.runs.count_documents({"job": delayed.id, "phase": "end"}) == 1,
            timeout=15,
        )
        assert time.monotonic() - began >= 2.9
    finally:
        _end(proc, graceful=False)


@pytest.mark.timeout(60)
def test_stop_with_a_stuck_sync_handler_ends_the_process(
    mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    """The handler's thread never keeps the process alive once the worker stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.stuck", mongodb_uri, mongo_db.name, "sync", "0.5"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"running"
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"stopped" in out
    assert time.monotonic() - began < 0.5 + 2.0 + 3.0, "not held by the handler's thread"


@pytest.mark.timeout(60)
def test_a_second_sigint_forces_the_stop(
    mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.stuck", mongodb_uri, mongo_db.name, "async", "30"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"running"
    proc.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(1.0)  # the first one waits for the running job (up to 30 s)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - began < 5
    assert b"stopped" in out
    assert b"waiting up to 30s for 1 running job(s)" in err
    job = mongo_db.monque_jobs.find_one()
    assert job is not None and job["status"] == "pending", "handed back"


SOAK_OPTIONS = {
    "poll_interval": 0.05,
    "lock_timeout": 6.0,
    "heartbeat_interval": 0.5,
    "recovery_interval": 0.5,
    "worker_concurrency": 2,
    "backoff_base": 0.1,
}


def _soak_worker(uri: str, db_name: str, instance_id: str, skewed: bool) -> subprocess.Popen[bytes]:
    env = _env(MONQUE_TEST_OPTIONS=json.dumps(SOAK_OPTIONS), MONQUE_TEST_WORK="0.05")
    if skewed:
        env = _skewed(env)
        command = [sys.executable, "-m", "tests.procs.async_worker"]
    else:
        command = [sys.executable, "-m", "tests.procs.worker"]
    proc = _spawn(command, [uri, db_name, instance_id], env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.timeout(900)
async def test_soak_two_thousand_jobs_with_skew_cancels_and_a_crash(
    mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> None:
    """Two worker processes, one of them 25 s ahead (where faketime exists), random cancels
    of running jobs and one SIGKILL: every job ends completed or (as requested) cancelled; no
    handler runs twice except those in flight in the killed process; nothing fails."""
    total, batch = int(os.environ.get("MONQUE_SOAK_JOBS", "2000")), 100
    rng = random.Random(11)
    report_at = time.monotonic() + 10
    producer = Monque(mongo_db)
    final: dict[Any, dict[str, Any]] = {}
    requested: set[Any] = set()
    enqueued = 0
    in_flight: set[Any] = set()
    killed = False
    deadline = time.monotonic() + 840
    plain = _soak_worker(mongodb_uri, mongo_db.name, "plain", skewed=False)
    other = _soak_worker(mongodb_uri, mongo_db.name, "skewed", skewed=FAKETIME is not None)
    replacement: subprocess.Popen[bytes] | None = None
    try:
        while len(final) < total:
            assert time.monotonic() < deadline, f"{len(final)} of {total} finished in time"
            # Top the backlog up and move finished jobs out, as retention would: the embedded
            # server's claims slow down with the collection's size (see test_processes).
            if (
                enqueued < total
                and mongo_db.monque_jobs.count_documents({"status": "pending"}) < batch // 2
            ):
                producer.enqueue_many_sync(
                    [("proc-job", {"i": i}) for i in range(enqueued, enqueued + batch)]
                )
                enqueued += batch
            running = [d["_id"] for d in mongo_db.monque_jobs.find({"status": "processing"})]
            if running and rng.random() < 0.6:
                target = rng.choice(running)
                with contextlib.suppress(JobStateError):  # it finished meanwhile
                    await producer.cancel_job(target)
                    # Accepted: asked of its holder, or (recovered to pending meanwhile, after
                    # the kill) cancelled at once.
                    requested.add(target)
            if not killed and len(final) > total // 3:
                held = {
                    d["_id"]
                    for d in mongo_db.monque_jobs.find(
                        {"status": "processing", "claimedBy": "plain"}, {"_id": 1}
                    )
                }
                if held:
                    plain.send_signal(signal.SIGKILL)
                    plain.wait(10)
                    in_flight = held | {
                        d["_id"]
                        for d in mongo_db.monque_jobs.find(
                            {"status": "processing", "claimedBy": "plain"}, {"_id": 1}
                        )
                    }
                    killed = True
                    replacement = _soak_worker(mongodb_uri, mongo_db.name, "plain-2", False)
            for doc in mongo_db.monque_jobs.find(
                {"status": {"$in": ["completed", "cancelled", "failed"]}}
            ):
                assert doc["_id"] not in final, "a job finished twice"
                final[doc["_id"]] = doc
                mongo_db.monque_jobs.delete_one({"_id": doc["_id"]})
            if time.monotonic() > report_at:
                report_at = time.monotonic() + 10
                print(f"soak: {len(final)} of {total} finished", file=sys.stderr, flush=True)
            await asyncio.sleep(0.2)
    finally:
        _end(other, graceful=FAKETIME is None)
        _end(plain)
        _end(replacement)
    assert killed and in_flight, "the SIGKILL landed while the process held jobs"
    statuses = Counter(doc["status"] for doc in final.values())
    cancelled = {job for job, doc in final.items() if doc["status"] == "cancelled"}
    assert statuses["failed"] == 0, "no job failed: no handler failed"
    assert cancelled <= requested, "only jobs whose cancel was requested are cancelled"
    assert statuses["completed"] + statuses["cancelled"] == total
    # A claim the killed process sent just before the SIGKILL can be applied by the server
    # after the read above (seen in CI): its job was held by the killed process too, and the
    # recovery says so in the reason it leaves.
    in_flight |= {
        job
        for job, doc in final.items()
        if "lease of 'plain' expired" in (doc.get("failReason") or "")
    }
    assert all(doc["failCount"] == 0 for job, doc in final.items() if job not in in_flight)
    starts = Counter(r["job"] for r in mongo_db.runs.find({"phase": "start"}))
    twice = {job for job, n in starts.items() if n > 1}
    assert twice <= in_flight, "only handlers in flight in the killed process ran twice"
    completed = {job for job, doc in final.items() if doc["status"] == "completed"}
    ends = Counter(r["job"] for r in mongo_db.runs.find({"phase": "end"}))
    assert completed <= set(ends), "every completed job's handler ran to its end"
    print(
        f"soak: {statuses['completed']} completed, {statuses['cancelled']} cancelled "
        f"({len(requested)} requested), {len(in_flight)} in flight at the SIGKILL, "
        f"{len(twice)} ran twice, skewed worker: {FAKETIME is not None}"
    )
