"""``monque stats``: counts per name and status, time in queue, throughput, live workers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from monque import management as mg
from monque.cli.render import STATUSES, iso
from monque.engine import Monque
from monque.storage import JobCollection

__all__ = ["Report", "collect", "render", "report_dict"]

WINDOWS = (5, 15)  # minutes


@dataclass(frozen=True)
class Report:
    name: str | None
    now: datetime
    counts: dict[str, int]  # every status, zeros included
    by_name: dict[str, dict[str, int]]
    timings: mg.QueueTimings
    throughput: list[mg.Throughput]
    workers: list[mg.LiveInstance]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def collect(monque: Monque, name: str | None) -> Report:
    """Read everything ``stats`` shows (read-only; times are the server's)."""
    jobs = monque.jobs
    jobs.run_sync(monque.clock.measure())
    now = monque.clock.now()
    by_name = jobs.run_sync(mg.count_by_name(name))
    counts = dict.fromkeys(STATUSES, 0)
    for per_status in by_name.values():
        for status, count in per_status.items():
            counts[status] = counts.get(status, 0) + count
    instances = JobCollection(monque.database, f"{monque.options.collection}_instances")
    running = jobs.run_sync(mg.running_by_owner())
    workers = [
        replace(w, running=running.get(w.id, 0)) for w in instances.run_sync(mg.live_instances(now))
    ]
    return Report(
        name=name,
        now=now,
        counts=counts,
        by_name={n: {s: c.get(s, 0) for s in STATUSES} for n, c in by_name.items()},
        timings=jobs.run_sync(mg.get_timings(name, now)),
        throughput=jobs.run_sync(mg.get_throughput(name, now, WINDOWS)),
        workers=workers,
    )


def _time(value: datetime | None) -> str | None:
    return iso(value) if value is not None else None


def report_dict(report: Report) -> dict[str, Any]:
    t = report.timings
    return {
        "name": report.name,
        "time": iso(report.now),
        "counts": report.counts,
        "total": report.total,
        "by_name": report.by_name,
        "avg_wait": t.avg_wait,
        "avg_run": t.avg_run,
        "completed_measured": t.completed,
        "due": t.due,
        "oldest_due": t.oldest_due,
        "throughput": {
            f"{w.minutes}m": {
                "completed": w.completed,
                "failed": w.failed,
                "completed_per_minute": round(w.completed_per_minute, 3),
                "failed_per_minute": round(w.failed_per_minute, 3),
            }
            for w in report.throughput
        },
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "started": _time(w.started_at),
                "last_seen": _time(w.last_seen),
                "expires": _time(w.expires_at),
                "running": w.running,
            }
            for w in report.workers
        ],
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"
    if value < 3600:
        return f"{value / 60:.1f}min"
    return f"{value / 3600:.1f}h"


def _ago(now: datetime, when: datetime | None) -> str:
    if when is None:
        return "-"
    return f"{_seconds(max((now - when).total_seconds(), 0.0))} ago"


def render(report: Report) -> RenderableType:
    title = f"monque jobs ({report.name})" if report.name else "monque jobs"
    counts = Table(title=Text(title), title_justify="left", box=None, padding=(0, 1))
    counts.add_column("name", overflow="fold")
    for status in (*STATUSES, "total"):
        counts.add_column(status, justify="right", no_wrap=True)
    for job_name, per_status in report.by_name.items():
        counts.add_row(
            Text(job_name),
            *(str(per_status[s]) for s in STATUSES),
            str(sum(per_status.values())),
        )
    counts.add_row(
        Text("all", style="bold"),
        *(str(report.counts[s]) for s in STATUSES),
        str(report.total),
        style="bold",
        end_section=True,
    )

    t = report.timings
    queue = Text.assemble(
        ("queue: ", "bold"),
        f"{t.due} due now",
        f", the oldest for {_seconds(t.oldest_due)}" if t.oldest_due is not None else "",
        "; ",
        (
            f"the {t.completed} completed jobs waited {_seconds(t.avg_wait)} from their due "
            f"time and ran {_seconds(t.avg_run)} (mean)"
            if t.completed
            else "no completed jobs to time"
        ),
    )

    throughput = Table(box=None, padding=(0, 1), title=Text("throughput"), title_justify="left")
    throughput.add_column("window")
    for header in ("completed", "failed", "completed/min", "failed/min"):
        throughput.add_column(header, justify="right", no_wrap=True)
    for window in report.throughput:
        throughput.add_row(
            f"last {window.minutes} min",
            str(window.completed),
            str(window.failed),
            f"{window.completed_per_minute:.1f}",
            f"{window.failed_per_minute:.1f}",
        )

    parts: list[RenderableType] = [counts, "", queue, "", throughput, ""]
    if not report.workers:
        parts.append(Text("workers: none live"))
    else:
        workers = Table(box=None, padding=(0, 1), title=Text("workers"), title_justify="left")
        workers.add_column("id", overflow="fold")
        workers.add_column("host", overflow="fold")
        workers.add_column("pid", justify="right", no_wrap=True)
        workers.add_column("started (UTC)", no_wrap=True)
        workers.add_column("last seen", no_wrap=True)
        workers.add_column("running", justify="right", no_wrap=True)
        for w in report.workers:
            workers.add_row(
                Text(w.id),
                Text(w.host or "-"),
                str(w.pid) if w.pid is not None else "-",
                w.started_at.strftime("%Y-%m-%d %H:%M:%S") if w.started_at else "-",
                _ago(report.now, w.last_seen),
                str(w.running),
            )
        parts.append(workers)
    return Group(*parts)
