"""Monque benchmark suite: prints a table and writes benchmarks/results.json.

    ./scripts/bench.sh [--jobs 300] [--memory-jobs 5000] [--quick]

Runs against $MONGODB_URI or an embedded server started here. Every scenario is bounded and
ends by itself. A bare pymongo loop (claim with find_one_and_update, complete with update_one)
runs in the same session as the floor, so figures read as ratios on whatever server ran them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from benchmarks.counting import CommandCounter
from benchmarks.proc_worker import floor_step, register_noop
from monque import Events, Job, Monque
from monque.lifecycle import new_document
from monque.storage.indexes import INDEXES
from monque.testing import EmbeddedMongo

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
STREAM_COMMANDS = ("getMore", "aggregate", "killCursors")


def now() -> datetime:
    return datetime.now(timezone.utc)


def seed(db: Any, count: int) -> None:
    db.monque_jobs.drop()
    db.monque_jobs.create_indexes(INDEXES)
    at = now() - timedelta(seconds=1)
    db.monque_jobs.insert_many(
        [new_document("bench", None, now=at, run_at=at) for _ in range(count)]
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, uri: str, jobs: int) -> None:
        self.uri = uri
        self.jobs = jobs
        self.counter = CommandCounter()
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[self.counter])
        self.results: dict[str, Any] = {}

    def db(self, name: str) -> Any:
        self.client.drop_database(name)
        return self.client[name]

    # -- throughput, commands and CPU per job ---------------------------------------------

    def floor(self) -> dict[str, Any]:
        db = self.db("bench_floor")
        seed(db, self.jobs)
        self.counter.reset()
        cpu, start = time.process_time(), time.perf_counter()
        done = 0
        while floor_step(db.monque_jobs):
            done += 1
        return self._figures(done, start, cpu)

    def engine(self, kind: str, idle_names: int = 0) -> dict[str, Any]:
        """Drain the seeded queue; ``idle_names`` more workers are registered with nothing to
        do (real apps register many names, most idle at any moment)."""
        db = self.db(f"bench_{kind}_{idle_names}")
        seed(db, self.jobs)

        async def main() -> dict[str, Any]:
            monque = Monque(db, poll_interval=0.05, worker_concurrency=5)
            finished = asyncio.Event()
            count = 0

            def complete(job: Job[Any], duration: float) -> None:
                nonlocal count
                count += 1
                if count == self.jobs:
                    finished.set()

            monque.on(Events.JOB_COMPLETE, complete)
            register_noop(monque, kind)
            for i in range(idle_names):
                monque.worker(f"idle-{i}", lambda job: None)
            await monque.initialize()
            self.counter.reset()
            cpu, start = time.process_time(), time.perf_counter()
            await monque.start()
            await asyncio.wait_for(finished.wait(), 600)
            figures = self._figures(count, start, cpu)
            await monque.stop()
            return figures

        return asyncio.run(main())

    def _figures(self, done: int, start: float, cpu: float) -> dict[str, Any]:
        elapsed = time.perf_counter() - start
        cpu_used = time.process_time() - cpu
        commands = self.counter.reset()
        # Change-stream traffic is counted apart: the embedded server answers a getMore after
        # every write to the collection, even filtered ones (see benchmarks/README.md).
        stream = {k: commands.pop(k) for k in STREAM_COMMANDS if k in commands}
        total = sum(commands.values())
        return {
            "jobs": done,
            "jobs_per_s": round(done / elapsed, 1),
            "commands_per_job": round(total / done, 2),
            "commands_by_name": {k: round(v / done, 3) for k, v in sorted(commands.items())},
            "stream_commands_per_job": round(sum(stream.values()) / done, 2),
            "cpu_ms_per_job": round(cpu_used / done * 1000, 3),
        }

    def processes(self, mode: str, count: int = 4) -> dict[str, Any]:
        db = self.db(f"bench_procs_{mode}")
        seed(db, self.jobs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.proc_worker", mode, self.uri, db.name], env=env
            )
            for _ in range(count)
        ]
        try:
            deadline = time.monotonic() + 600
            while db.monque_jobs.count_documents({"status": "completed"}) < self.jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{mode}: {count} processes did not finish")
                time.sleep(0.1)
            elapsed = time.perf_counter() - start
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait(60)
        return {"processes": count, "jobs": self.jobs, "jobs_per_s": round(self.jobs / elapsed, 1)}

    # -- latency ----------------------------------------------------------------------------

    def latency(self, samples: int, delay: float | None, other: bool) -> dict[str, Any]:
        """Enqueue to handler start; ``other``: the producer is another instance (its own
        client), so only the change stream can wake the worker before its next poll."""
        db = self.db("bench_latency")
        producer_client: MongoClient[dict[str, Any]] = MongoClient(self.uri)

        async def main() -> dict[str, Any]:
            monque = Monque(db, poll_interval=1.0)
            producer = Monque(producer_client[db.name]) if other else monque
            started: dict[Any, float] = {}
            arrived = asyncio.Event()
            opened = asyncio.Event()
            monque.on(Events.CHANGE_STREAM_OPEN, opened.set)

            async def handler(job: Job[Any]) -> None:
                started[job.id] = time.time()
                arrived.set()

            monque.worker("probe", handler)
            await monque.start()
            await asyncio.wait_for(opened.wait(), 10)
            gaps = []
            for _ in range(samples):
                arrived.clear()
                at = time.time()
                job = await asyncio.to_thread(producer.enqueue_sync, "probe", delay=delay)
                await asyncio.wait_for(arrived.wait(), 30)
                reference = job.next_run_at.timestamp() if delay else at
                gaps.append((started[job.id] - reference) * 1000)
                await asyncio.sleep(0.05)
            await monque.stop()
            return {
                "samples": samples,
                "producer": "another instance" if other else "same instance",
                "p50_ms": round(percentile(gaps, 50), 1),
                "p99_ms": round(percentile(gaps, 99), 1),
            }

        try:
            return asyncio.run(main())
        finally:
            producer_client.close()

    def idle(self, seconds: float) -> dict[str, Any]:
        db = self.db("bench_idle")

        async def main() -> dict[str, Any]:
            monque = Monque(db)
            for i in range(10):
                monque.worker(f"idle-{i}", lambda job: None)
            opened = asyncio.Event()
            monque.on(Events.CHANGE_STREAM_OPEN, opened.set)
            await monque.start()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(opened.wait(), 10)
            streaming = opened.is_set()
            await asyncio.sleep(2)  # past start-up (indexes, registration)
            self.counter.reset()
            await asyncio.sleep(seconds)
            commands = self.counter.reset()
            await monque.stop()
            total = sum(commands.values())
            return {
                "workers": 10,
                "seconds": seconds,
                "change_stream": streaming,
                "commands_per_min": round(total * 60 / seconds, 1),
                "by_name": dict(commands),
            }

        return asyncio.run(main())

    # -- enqueue and memory ---------------------------------------------------------------

    def enqueue(self, count: int) -> dict[str, Any]:
        db = self.db("bench_enqueue")
        monque = Monque(db)
        monque.initialize_sync()
        start = time.perf_counter()
        for i in range(count):
            monque.enqueue_sync("e", {"i": i})
        single = count / (time.perf_counter() - start)
        db.monque_jobs.delete_many({})
        start = time.perf_counter()
        monque.enqueue_many_sync([("e", {"i": i}) for i in range(count)])
        bulk = count / (time.perf_counter() - start)
        return {"jobs": count, "single_per_s": round(single, 1), "bulk_per_s": round(bulk, 1)}

    def memory(self, count: int) -> dict[str, Any]:
        db = self.db("bench_memory")

        async def main() -> dict[str, Any]:
            monque = Monque(db, poll_interval=0.05, worker_concurrency=5)
            done = 0
            monque.on(Events.JOB_COMPLETE, lambda job, d: None)

            async def handler(job: Job[Any]) -> None:
                nonlocal done
                done += 1

            monque.worker("mem", handler)
            await monque.start()
            batch = 250
            warm = False
            base = rss_mb()
            while done < count:
                pending = await asyncio.to_thread(
                    db.monque_jobs.count_documents, {"status": "pending"}
                )
                if pending < batch // 2 and done + pending < count:
                    await monque.enqueue_many([("mem", {"i": i}) for i in range(batch)])
                # Finished jobs leave the collection, as retention would (keeps claims cheap here).
                await asyncio.to_thread(db.monque_jobs.delete_many, {"status": "completed"})
                if not warm and done >= batch:
                    warm, base = True, rss_mb()
                await asyncio.sleep(0.1)
            await monque.stop()
            return {
                "jobs": done,
                "rss_start_mb": round(base, 1),
                "rss_end_mb": round(rss_mb(), 1),
                "growth_mb": round(rss_mb() - base, 1),
            }

        return asyncio.run(main())


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1024 / 1024


TARGETS: list[tuple[str, Callable[[dict[str, Any]], bool], str]] = [
    ("commands per job (async) <= 1.5", lambda r: r["async"]["commands_per_job"] <= 1.5, ""),
    (
        "10 names (1 busy): commands per job <= 1 name's + 0.1",
        lambda r: r["async_10_names"]["commands_per_job"] <= r["async"]["commands_per_job"] + 0.1,
        "",
    ),
    (
        "10 names (1 busy): throughput >= 0.9x 1 name's",
        lambda r: r["async_10_names"]["jobs_per_s"] >= 0.9 * r["async"]["jobs_per_s"],
        "",
    ),
    (
        "CPU per job <= 1.5x floor",
        lambda r: r["async"]["cpu_ms_per_job"] <= 1.5 * r["floor"]["cpu_ms_per_job"],
        "",
    ),
    (
        "throughput >= floor (1 process)",
        lambda r: r["async"]["jobs_per_s"] >= r["floor"]["jobs_per_s"],
        "",
    ),
    ("idle pickup p50 <= 25 ms", lambda r: r["pickup"]["p50_ms"] <= 25, ""),
    ("idle pickup p99 <= 100 ms", lambda r: r["pickup"]["p99_ms"] <= 100, ""),
    ("delayed lateness p99 <= 250 ms", lambda r: r["lateness"]["p99_ms"] <= 250, ""),
    ("idle commands/min (10 workers) <= 60", lambda r: r["idle"]["commands_per_min"] <= 60, ""),
    ("RSS growth < 20 MB", lambda r: r["memory"]["growth_mb"] < 20, ""),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--memory-jobs", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.memory_jobs = 60, 300
    with ExitStack() as stack:
        uri = os.environ.get("MONGODB_URI")
        server = "MONGODB_URI"
        if not uri:
            uri = stack.enter_context(EmbeddedMongo()).uri
            server = "embedded SecantusDB (a test surrogate: compare ratios, not absolutes)"
        bench = Bench(uri, args.jobs)
        r = bench.results
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("floor", bench.floor),
            ("async", lambda: bench.engine("async")),
            ("sync", lambda: bench.engine("sync")),
            ("async_10_names", lambda: bench.engine("async", idle_names=9)),
            ("floor_4_procs", lambda: bench.processes("floor")),
            ("async_4_procs", lambda: bench.processes("async")),
            ("sync_4_procs", lambda: bench.processes("sync")),
            ("pickup", lambda: bench.latency(5 if args.quick else 40, None, other=True)),
            ("pickup_same", lambda: bench.latency(5 if args.quick else 40, None, other=False)),
            ("lateness", lambda: bench.latency(5 if args.quick else 30, 0.5, other=True)),
            ("idle", lambda: bench.idle(5 if args.quick else 60)),
            ("enqueue", lambda: bench.enqueue(200 if args.quick else 1000)),
            ("memory", lambda: bench.memory(args.memory_jobs)),
        ]
        for name, step in steps:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            r[name] = step()
        report = {
            "server": server,
            "machine": (
                f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
            ),
            "when": now().isoformat(timespec="seconds"),
            "results": r,
            "targets": {label: check(r) for label, check, _ in TARGETS},
        }
    RESULTS.write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    r = report["results"]
    print(f"\nserver: {report['server']}\nmachine: {report['machine']}\n")
    print(f"{'scenario':<22}{'jobs/s':>10}{'cmds/job':>10}{'cpu ms/job':>12}  ratio to floor")
    floor = r["floor"]
    for key in ("floor", "async", "sync", "async_10_names"):
        row = r[key]
        print(
            f"{key:<22}{row['jobs_per_s']:>10}{row['commands_per_job']:>10}{row['cpu_ms_per_job']:>12}"
            f"  {row['jobs_per_s'] / floor['jobs_per_s']:.2f}x"
        )
    for key in ("floor_4_procs", "async_4_procs", "sync_4_procs"):
        print(f"{key:<22}{r[key]['jobs_per_s']:>10}")
    print(f"\ncommands per job (async): {r['async']['commands_by_name']}")
    print(f"change-stream commands per job (async), apart: {r['async']['stream_commands_per_job']}")
    for key, label in (("pickup", "pickup latency"), ("pickup_same", "pickup latency")):
        print(
            f"{label} (idle worker, producer: {r[key]['producer']}): "
            f"p50 {r[key]['p50_ms']} ms, p99 {r[key]['p99_ms']} ms"
        )
    print(
        f"delayed-job lateness (producer: {r['lateness']['producer']}): "
        f"p50 {r['lateness']['p50_ms']} ms, p99 {r['lateness']['p99_ms']} ms"
    )
    print(
        f"idle, 10 workers (change stream: {r['idle']['change_stream']}): "
        f"{r['idle']['commands_per_min']} commands/min {r['idle']['by_name']}"
    )
    print(f"enqueue: {r['enqueue']['single_per_s']}/s single, {r['enqueue']['bulk_per_s']}/s bulk")
    m = r["memory"]
    print(
        f"memory: RSS {m['rss_start_mb']} -> {m['rss_end_mb']} MB over {m['jobs']} jobs "
        f"({m['growth_mb']:+} MB)"
    )
    print("\ntargets:")
    for label, ok in report["targets"].items():
        print(f"  [{'met' if ok else 'MISSED'}] {label}")
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
