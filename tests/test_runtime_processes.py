"""The runtime as separate OS processes see it: a host clock 25 s ahead (Debian's ``faketime``),
a stop with a handler that never returns, and a second Ctrl-C."""
# faketime shifts the whole process's wall clock: the honest test of skew between hosts.

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from monque import Events, Job
from tests.conftest import MakeMonque
from tests.helpers import Recorder, eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FAKETIME = shutil.which("faketime")


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
    healthy = make_monque(lock_timeout=2.0, heartbeat_interval=0.5, worker_concurrency=1)
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
    env = _env(
        MONQUE_TEST_OPTIONS=json.dumps(options),
        MONQUE_TEST_WORK="0.01",
    )
    # libfaketime 0.9.10 also shifts the monotonic clock (FAKETIME_DONT_FAKE_MONOTONIC=1 makes
    # Python's time.sleep fail there), so the skewed worker is asyncio-only: see async_worker.
    proc = _spawn(
        [FAKETIME, "-f", "+25s", sys.executable, "-m", "tests.procs.async_worker"],
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
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


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
