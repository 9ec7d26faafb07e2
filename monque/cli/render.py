"""Output for the CLI: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bson import ObjectId
from rich.console import Console
from rich.table import Table

from monque.cron import get_zone
from monque.job import Job
from monque.management import QueueStats

__all__ = ["job_dict", "jobs_table", "print_json", "schedules_table", "stats_table"]


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    return str(value)


def print_json(console: Console, value: object) -> None:
    console.print_json(json.dumps(value, default=_default))


def job_dict(job: Job[Any]) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "name": job.name,
        "status": job.status.value,
        "data": job.data,
        "nextRunAt": job.next_run_at,
        "priority": job.priority,
        "failCount": job.fail_count,
        "failReason": job.fail_reason,
        "repeatInterval": job.repeat_interval,
        "timezone": job.timezone,
        "uniqueKey": job.unique_key,
        "claimedBy": job.claimed_by,
        "progress": job.progress,
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
    }


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def jobs_table(jobs: list[Job[Any]]) -> Table:
    table = Table("id", "name", "status", "next run (UTC)", "fails", "reason")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.name,
            job.status.value,
            _when(job.next_run_at),
            str(job.fail_count),
            (job.fail_reason or "")[:60],
        )
    return table


def stats_table(stats: QueueStats, name: str | None) -> Table:
    table = Table("status", "jobs", title=f"monque jobs{f' ({name})' if name else ''}")
    for status in ("pending", "processing", "completed", "failed", "cancelled"):
        table.add_row(status, str(stats.count(status)))
    table.add_row("total", str(stats.total), style="bold")
    if stats.avg_wait is not None and stats.avg_run is not None:
        table.caption = (
            f"completed: {stats.avg_wait:.3f}s in queue, {stats.avg_run:.3f}s running (mean)"
        )
    return table


def schedules_table(jobs: list[Job[Any]]) -> Table:
    table = Table("name", "cron", "timezone", "next run (local)", "status", "key")
    for job in jobs:
        zone = get_zone(job.timezone)
        table.add_row(
            job.name,
            job.repeat_interval or "",
            job.timezone or "UTC",
            _when(job.next_run_at.astimezone(zone)),
            job.status.value,
            job.unique_key or "",
        )
    return table
