"""The ``monque`` command group and its commands for jobs, schedules and stats."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click
from rich.live import Live
from rich.text import Text

import monque
from monque.cli import stats as stats_report
from monque.cli.context import (
    DEFAULT_COLLECTION,
    DEFAULT_TIMEOUT,
    State,
    global_options,
    one_line_errors,
    pass_state,
    record_sources,
)
from monque.cli.dashboard import dashboard
from monque.cli.devserver import dev_server
from monque.cli.render import (
    STATUSES,
    dumps,
    job_dict,
    job_lines,
    jobs_table,
    schedules_table,
)
from monque.cli.worker import worker
from monque.errors import JobNotFoundError
from monque.job import Job, JobStatus
from monque.storage import Operation
from monque.storage.calls import Call

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(name="monque", context_settings=CONTEXT)
@click.version_option(monque.__version__, "--version", prog_name="monque")
@click.option("--uri", envvar="MONGODB_URI", help="MongoDB connection string [env MONGODB_URI]")
@click.option("--db", envvar="MONQUE_DB", help="database (default: the URI's) [env MONQUE_DB]")
@click.option("--collection", default=DEFAULT_COLLECTION, show_default=True, help="jobs collection")
@click.option(
    "--timeout",
    default=DEFAULT_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="seconds to wait for MongoDB before giving up",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def cli(
    ctx: click.Context,
    uri: str | None,
    db: str | None,
    collection: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Monque: a MongoDB-backed job queue and cron scheduler.

    The global options (--uri, --db, --collection, --timeout, --json) go before or after
    the subcommand.
    """
    state = State(uri=uri, db=db, collection=collection, timeout=timeout, as_json=as_json)
    record_sources(ctx, state)
    ctx.obj = state
    ctx.call_on_close(state.close)


cli.add_command(worker)
cli.add_command(dev_server)
cli.add_command(dashboard)


def _print_json(value: object) -> None:
    click.echo(dumps(value))


def _show(state: State, job: Job[Any]) -> None:
    if state.as_json:
        _print_json(job_dict(job))
    else:
        for line in job_lines(job):
            state.out.print(line, soft_wrap=True)


# -- jobs ------------------------------------------------------------------------------------


@cli.group()
@global_options
def jobs() -> None:
    """List, show, retry, cancel and delete jobs."""


@jobs.command("list")
@click.option("--name", help="only jobs of this name")
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(STATUSES, case_sensitive=False),
    help="repeatable; any case",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="next_cursor of the previous page")
@global_options
@pass_state
def list_jobs(
    state: State, name: str | None, status: tuple[str, ...], limit: int, cursor: str | None
) -> None:
    """Jobs, newest first."""
    with one_line_errors(state):
        page = state.monque().get_jobs_sync(
            name=name, status=[s.lower() for s in status] or None, limit=limit, cursor=cursor
        )
        if state.as_json:
            _print_json(
                {"jobs": [job_dict(j) for j in page.jobs], "next_cursor": page.next_cursor},
            )
            return
        if not page.jobs:
            state.say("no more jobs" if cursor else "no jobs", _filters(name, status))
            return
        state.out.print(jobs_table(page.jobs, state.out.width))
        if page.next_cursor:
            state.say(f"more: --cursor {page.next_cursor}")


def _filters(name: str | None, status: tuple[str, ...]) -> str:
    parts = []
    if name is not None:
        parts.append(f"name {name}")
    if status:
        parts.append(f"status {', '.join(s.lower() for s in status)}")
    return f" ({'; '.join(parts)})" if parts else ""


@jobs.command("show")
@click.argument("job_id")
@global_options
@pass_state
def show_job(state: State, job_id: str) -> None:
    """One job in full: data as JSON, times in ISO-8601 UTC, the failure traceback."""
    with one_line_errors(state):
        job = state.monque().get_job_sync(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id}", job_id)
        _show(state, job)


@jobs.command("retry")
@click.argument("job_id")
@global_options
@pass_state
def retry_job(state: State, job_id: str) -> None:
    """Run a failed or cancelled job again now."""
    with one_line_errors(state):
        job = state.monque().retry_job_sync(job_id)
        _done(state, job, "retried", "runs again now")


@jobs.command("cancel")
@click.argument("job_id")
@global_options
@pass_state
def cancel_job(state: State, job_id: str) -> None:
    """Cancel a pending job, or ask the worker running it to stop."""
    with one_line_errors(state):
        job = state.monque().cancel_job_sync(job_id)
        if job.status is JobStatus.CANCELLED:
            _done(state, job, "cancelled", None)
        else:
            _done(
                state,
                job,
                "cancellation requested",
                "it is running: its worker stops it and it ends cancelled",
            )


@jobs.command("delete")
@click.argument("job_id")
@global_options
@pass_state
def delete_job(state: State, job_id: str) -> None:
    """Delete a job that is not running."""
    with one_line_errors(state):
        job = state.monque().delete_job_sync(job_id)
        _done(state, job, "deleted", None)


def _done(state: State, job: Job[Any], action: str, note: str | None) -> None:
    if state.as_json:
        _print_json({**job_dict(job), "action": action})
        return
    state.say(action, " ", Text(job.name), f" {job.id}", f" ({note})" if note else "")


# -- enqueue ---------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--data", default="null", help="JSON payload")
@click.option(
    "--run-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]),
    help="timezone-aware time, e.g. 2030-01-01T09:00:00+00:00",
)
@click.option("--delay", type=click.FloatRange(min=0), help="seconds from now")
@click.option("--unique-key")
@click.option("--priority", default=0, show_default=True, type=int)
@global_options
@pass_state
def enqueue(
    state: State,
    name: str,
    data: str,
    run_at: datetime | None,
    delay: float | None,
    unique_key: str | None,
    priority: int,
) -> None:
    """Enqueue a job."""
    with one_line_errors(state):
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--data is not JSON: {exc}") from None
        job = state.monque().enqueue_sync(
            name, payload, run_at=run_at, delay=delay, unique_key=unique_key, priority=priority
        )
        if state.as_json:
            _print_json({**job_dict(job), "created": job.created})
            return
        verb = "enqueued" if job.created else "already queued"
        state.say(
            verb,
            " ",
            Text(job.name),
            f" {job.id} (next run {job.next_run_at:%Y-%m-%d %H:%M:%S} UTC)",
        )


# -- schedules -------------------------------------------------------------------------------


def _recurring(name: str | None) -> Operation[list[Job[Any]]]:
    flt: dict[str, Any] = {
        "repeatInterval": {"$exists": True},
        "status": {"$in": [JobStatus.PENDING.value, JobStatus.PROCESSING.value]},
    }
    if name is not None:
        flt["name"] = name
    docs = yield Call("find", (flt,), {"sort": [("name", 1), ("nextRunAt", 1)]})
    return [Job.from_document(d) for d in docs]


@cli.group(invoke_without_command=True)
@click.option("--name", help="only schedules of this job name")
@global_options
@click.pass_context
def schedules(ctx: click.Context, name: str | None) -> None:
    """Recurring jobs with their next run in their own time zone (remove: `schedules remove`)."""
    if ctx.invoked_subcommand is None:
        _list_schedules(ctx.ensure_object(State), name)


@schedules.command("list")
@click.option("--name", help="only schedules of this job name")
@global_options
@pass_state
def list_schedules(state: State, name: str | None) -> None:
    """Recurring jobs with their next run in their own time zone."""
    _list_schedules(state, name)


def _list_schedules(state: State, name: str | None) -> None:
    with one_line_errors(state):
        engine = state.monque()
        recurring = engine.jobs.run_sync(_recurring(name))
        if state.as_json:
            _print_json([job_dict(j) for j in recurring])
        elif not recurring:
            state.say("no schedules", f" (name {name})" if name else "")
        else:
            state.out.print(schedules_table(recurring, state.out.width))


@schedules.command("remove")
@click.argument("name")
@click.option("--key", help="the schedule's unique key (default: the one schedule of NAME)")
@global_options
@pass_state
def remove_schedule(state: State, name: str, key: str | None) -> None:
    """Remove a recurring job (refused while it runs: wait for the run, or cancel it)."""
    with one_line_errors(state):
        removed = state.monque().unschedule_sync(name, unique_key=key)
        label = Text.assemble(Text(name), *((" (key ", Text(key), ")") if key else ()))
        if state.as_json:
            _print_json({"name": name, "key": key, "removed": removed})
        elif removed:
            state.say("removed schedule ", label)
        else:
            state.say("no such schedule: ", label)
        if not removed:
            raise click.exceptions.Exit(1)


# -- stats -----------------------------------------------------------------------------------


@cli.command()
@click.option("--name", help="only jobs of this name")
@click.option("--watch", is_flag=True, help="refresh until Ctrl-C")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1))
@global_options
@pass_state
def stats(state: State, name: str | None, watch: bool, interval: float) -> None:
    """Jobs per name and status, time in queue, throughput and live workers.

    Time in queue runs from a job's due time (nextRunAt) to its start, so delayed and
    scheduled jobs do not look slow. Throughput counts the jobs that completed or failed
    an attempt in the last 5 and 15 minutes (by completedAt / failedAt).
    """
    with one_line_errors(state):
        engine = state.monque()
        report = stats_report.collect(engine, name)
        if state.as_json:
            _print_json(stats_report.report_dict(report))
            return
        if not watch:
            state.out.print(stats_report.render(report))
            return
        with Live(stats_report.render(report), console=state.out) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(stats_report.render(stats_report.collect(engine, name)))
            except KeyboardInterrupt:
                pass


def main() -> None:
    cli(prog_name="monque")
