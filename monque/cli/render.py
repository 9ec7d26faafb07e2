"""Output for the CLI: rich tables for people, JSON for scripts.

Everything that comes from the data (names, payloads, unique keys, failure reasons) is put in
``rich.text.Text`` objects, never in markup strings, so ``[bold]`` in a job name prints as is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from monque.cron import get_zone
from monque.display import dumps, iso
from monque.job import Job, JobStatus

__all__ = [
    "STATUSES",
    "default_key",
    "dumps",
    "iso",
    "job_dict",
    "job_lines",
    "jobs_table",
    "schedules_table",
]

STATUSES = tuple(s.value for s in JobStatus)
ID_WIDTH = 24  # an ObjectId's hex string, which the other commands take


def job_dict(job: Job[Any]) -> dict[str, Any]:
    """A job with its stored (camelCase) field names; ``None`` for fields it does not have."""
    return {
        "id": str(job.id),
        "name": job.name,
        "status": job.status.value,
        "data": job.data,
        "nextRunAt": job.next_run_at,
        "priority": job.priority,
        "failCount": job.fail_count,
        "failReason": job.fail_reason,
        "failTraceback": job.fail_traceback,
        "repeatInterval": job.repeat_interval,
        "timezone": job.timezone,
        "uniqueKey": job.unique_key,
        "claimedBy": job.claimed_by,
        "progress": job.progress,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
        "failedAt": job.failed_at,
        "cancelledAt": job.cancelled_at,
        "lastHeartbeat": job.last_heartbeat,
        "lockExpiresAt": job.lock_expires_at,
    }


def job_lines(job: Job[Any]) -> list[Text]:
    """``jobs show``: one ``key: value`` line per field that is set (data and progress as
    JSON, times in ISO-8601 UTC), then the failure traceback as stored."""
    lines = []
    for key, value in job_dict(job).items():
        if value is None or key == "failTraceback":
            continue
        if isinstance(value, datetime):
            shown = iso(value)
        elif key in {"data", "progress"}:
            shown = dumps(value, indent=None)
            if len(shown) > 60:
                shown = dumps(value)
        else:
            shown = str(value)
        lines.append(Text.assemble((f"{key}:", "bold"), " ", shown))
    if job.fail_traceback:
        lines.append(Text("failTraceback:", style="bold"))
        lines.append(Text(job.fail_traceback.rstrip("\n")))
    return lines


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


GUTTER = 2  # spaces between columns


def _table() -> Table:
    # No outer border, two-space gutters: at 80 columns the id and the times fit whole.
    return Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")


def _cells(text: Text | str) -> int:
    """The widest line's width on a terminal."""
    plain = text.plain if isinstance(text, Text) else text
    return max(cell_len(line) for line in plain.split("\n"))


def _share(room: int, natural: list[int], floors: list[int], first: int = 0) -> list[int] | None:
    """Widths for the flexible columns when their natural widths do not fit in ``room``:
    each gets its floor (or less if it needs less), then column ``first`` (the name) grows
    to its natural width, then the others; None if they fit as they are."""
    if sum(natural) <= room:
        return None
    widths = [min(n, f) for n, f in zip(natural, floors, strict=True)]
    spare = room - sum(widths)
    for i in [first, *(i for i in range(len(natural)) if i != first)]:
        grow = max(min(natural[i] - widths[i], spare), 0)
        widths[i] += grow
        spare -= grow
    return widths


def jobs_table(jobs: list[Job[Any]], width: int = 80) -> Table:
    """Never cuts the id (the value ``jobs show|retry|cancel|delete`` take); a long name
    wraps, a long failure reason is cut with an ellipsis (``jobs show`` has it whole)."""
    rows = []
    for job in jobs:
        status = Text(job.status.value)
        if job.fail_count:
            status.append(f"\n{job.fail_count} fail{'s' if job.fail_count > 1 else ''}", "dim")
        reason = " ".join((job.fail_reason or "").split())
        rows.append((str(job.id), Text(job.name), status, _when(job.next_run_at), reason))
    status_width = max([6, *(_cells(r[2]) for r in rows)])
    fixed = ID_WIDTH + status_width + 19 + 4 * GUTTER
    natural = [
        max([4, *(_cells(r[1]) for r in rows)]),
        max([6, *(_cells(r[4]) for r in rows)]),
    ]
    shares: list[int | None] = [None, None]
    shares = list(_share(width - fixed, natural, [14, 8]) or shares)
    table = _table()
    table.add_column("id", no_wrap=True, min_width=ID_WIDTH)
    table.add_column("name", overflow="fold", width=shares[0])
    table.add_column("status", no_wrap=True, min_width=status_width)
    table.add_column("next run (UTC)", no_wrap=True)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", width=shares[1])
    for job_id, name, status, when, reason in rows:
        table.add_row(job_id, name, status, when, Text(reason, no_wrap=True, overflow="ellipsis"))
    return table


def default_key(job: Job[Any]) -> bool:
    return job.unique_key == f"schedule:{job.name}"


def schedules_table(jobs: list[Job[Any]], width: int = 80) -> Table:
    """Recurring jobs: the next run in the schedule's own zone (named under the time, with
    "running now" under that while a run is in progress); under the name, the unique key
    when it is not the default one (``schedules remove NAME --key KEY`` needs it)."""
    rows = []
    for job in jobs:
        name = Text(job.name)
        if not default_key(job):
            name.append(f"\nkey {job.unique_key}", "dim")
        when = Text(_when(job.next_run_at.astimezone(get_zone(job.timezone))))
        when.append(f"\n{job.timezone or 'UTC'}")
        if job.status is JobStatus.PROCESSING:
            when.append("\nrunning now", "bold")
        rows.append((str(job.id), name, Text(job.repeat_interval or ""), when))
    fixed = ID_WIDTH + 19 + 3 * GUTTER
    natural = [max([4, *(_cells(r[1]) for r in rows)]), max([4, *(_cells(r[2]) for r in rows)])]
    when_width = max([16, *(_cells(r[3]) for r in rows)])
    shares: list[int | None] = [None, None]
    if sum(natural) + when_width > width - fixed + 19:  # narrow: a long zone name folds
        shares = list(_share(width - fixed, natural, [12, 11]) or shares)
        when_width = 19
    table = _table()
    table.add_column("id", no_wrap=True, min_width=ID_WIDTH)
    table.add_column("name", overflow="fold", width=shares[0])
    table.add_column("cron", overflow="fold", width=shares[1])
    table.add_column("next run (local)", overflow="fold", width=when_width)
    for row in rows:
        table.add_row(*row)
    return table
