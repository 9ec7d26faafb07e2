"""The ``monque`` command: run workers, inspect and manage jobs (``pip install monque-py[cli]``)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

try:
    import click
    from rich.console import Console
    from rich.live import Live
except ImportError:  # pragma: no cover - depends on the install

    def main() -> None:
        sys.stderr.write("monque: the CLI needs its extra: pip install 'monque-py[cli]'\n")
        sys.exit(1)

else:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from monque.cli.render import (
        job_dict,
        jobs_table,
        print_json,
        schedules_table,
        stats_table,
    )
    from monque.cli.targets import is_container, load_target, resolve_engine
    from monque.engine import Monque
    from monque.errors import MonqueError
    from monque.job import Job

    F = TypeVar("F", bound=Callable[..., Any])
    out = Console()
    err = Console(stderr=True)

    class Context:
        def __init__(self, uri: str | None, db: str | None, collection: str, as_json: bool) -> None:
            self.uri, self.db, self.collection, self.as_json = uri, db, collection, as_json
            self._client: MongoClient[dict[str, Any]] | None = None

        def monque(self) -> Monque:
            if not self.uri:
                raise click.UsageError("no MongoDB: pass --uri or set MONGODB_URI")
            self._client = MongoClient(self.uri, serverSelectionTimeoutMS=5000)
            return Monque(self._client, database=self.db, collection=self.collection)

        def close(self) -> None:
            if self._client is not None:
                self._client.close()

    @contextmanager
    def one_line_errors() -> Iterator[None]:
        """Errors as one clear line and exit code 1, never a traceback."""
        try:
            yield
        except (MonqueError, PyMongoError, TypeError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            sys.exit(1)

    @click.group()
    @click.option("--uri", envvar="MONGODB_URI", help="MongoDB connection string [env MONGODB_URI]")
    @click.option("--db", envvar="MONQUE_DB", help="database (default: the URI's) [env MONQUE_DB]")
    @click.option("--collection", default="monque_jobs", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @click.pass_context
    def cli(
        ctx: click.Context, uri: str | None, db: str | None, collection: str, as_json: bool
    ) -> None:
        """Monque: a MongoDB-backed job queue and cron scheduler."""
        ctx.obj = Context(uri, db, collection, as_json)
        ctx.call_on_close(ctx.obj.close)

    # -- worker ---------------------------------------------------------------------------

    @cli.command()
    @click.argument("target")
    @click.option("--concurrency", type=click.IntRange(min=1), help="jobs per worker at once")
    @click.option("--names", help="comma-separated job names to process (default: all)")
    def worker(target: str, concurrency: int | None, names: str | None) -> None:
        """Run workers until SIGINT/SIGTERM, then stop gracefully.

        TARGET is module:attribute naming a Monque, a function returning one, or a container
        nesting monque_di's MonqueContainer.
        """
        only = [n.strip() for n in names.split(",") if n.strip()] if names else None
        with one_line_errors():
            obj = load_target(target)
            if is_container(obj):
                asyncio.run(_run_container(obj, only, concurrency))
                return
            monque = resolve_engine(obj)
            monque.configure_workers(only=only, concurrency=concurrency)
            if not monque.worker_names:
                raise MonqueError("the target registers no workers")
            err.print(f"monque worker {monque.instance_id}: {', '.join(monque.worker_names)}")
            monque.run_sync()
            err.print("monque worker stopped")

    async def _run_container(obj: Any, only: list[str] | None, concurrency: int | None) -> None:
        from monque_di.lifecycle import engine_resource

        container = obj() if isinstance(obj, type) else obj
        # dependency-injector copies the function with the provider: compare by name.
        wanted = (engine_resource.__module__, engine_resource.__qualname__)
        providers = [
            p for p in container.traverse() if _qualified(getattr(p, "provides", None)) == wanted
        ]
        if not providers:
            raise MonqueError("the container nests no monque_di MonqueContainer")
        await container.init_resources()
        try:
            monque: Monque = await providers[0]()
            await monque.stop()  # re-started below with the CLI's choices
            monque.configure_workers(only=only, concurrency=concurrency)
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, monque.request_stop)
            err.print(f"monque worker {monque.instance_id}: {', '.join(monque.worker_names)}")
            await monque.run()
        finally:
            await container.shutdown_resources()
        err.print("monque worker stopped")

    def _qualified(obj: object) -> tuple[str, str]:
        return (getattr(obj, "__module__", ""), getattr(obj, "__qualname__", ""))

    # -- jobs -----------------------------------------------------------------------------

    @cli.group()
    def jobs() -> None:
        """List, show, retry, cancel and delete jobs."""

    @jobs.command("list")
    @click.option("--name")
    @click.option("--status", multiple=True, help="repeatable: pending, processing, ...")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--cursor", help="next_cursor of the previous page")
    @click.pass_obj
    def list_jobs(
        ctx: Context, name: str | None, status: tuple[str, ...], limit: int, cursor: str | None
    ) -> None:
        """Jobs, newest first."""
        with one_line_errors():
            page = ctx.monque().get_jobs_sync(
                name=name, status=list(status) or None, limit=limit, cursor=cursor
            )
            if ctx.as_json:
                print_json(
                    out, {"jobs": [job_dict(j) for j in page.jobs], "next_cursor": page.next_cursor}
                )
                return
            out.print(jobs_table(page.jobs))
            if page.next_cursor:
                out.print(f"more: --cursor {page.next_cursor}")

    def _show(ctx: Context, job: Job[Any]) -> None:
        if ctx.as_json:
            print_json(out, job_dict(job))
        else:
            for key, value in job_dict(job).items():
                if value is not None:
                    out.print(f"[bold]{key}[/bold]: {value}", highlight=False)

    @jobs.command("show")
    @click.argument("job_id")
    @click.pass_obj
    def show_job(ctx: Context, job_id: str) -> None:
        """One job in full."""
        with one_line_errors():
            job = ctx.monque().get_job_sync(job_id)
            if job is None:
                raise MonqueError(f"no job {job_id}")
            _show(ctx, job)

    def _action(name: str, method: str, help_text: str) -> None:
        @jobs.command(name, help=help_text)
        @click.argument("job_id")
        @click.pass_obj
        def command(ctx: Context, job_id: str) -> None:
            with one_line_errors():
                job = getattr(ctx.monque(), method)(job_id)
                _show(ctx, job)

    _action("retry", "retry_job_sync", "Run a failed or cancelled job again.")
    _action("cancel", "cancel_job_sync", "Cancel a pending job, or stop a running one.")
    _action("delete", "delete_job_sync", "Delete a job that is not running.")

    # -- stats, enqueue, schedules --------------------------------------------------------

    @cli.command()
    @click.option("--name")
    @click.option("--watch", is_flag=True, help="refresh until Ctrl-C")
    @click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1))
    @click.pass_obj
    def stats(ctx: Context, name: str | None, watch: bool, interval: float) -> None:
        """Jobs per status, time in queue and run time."""
        with one_line_errors():
            monque = ctx.monque()
            current = monque.get_stats_sync(name)
            if ctx.as_json:
                print_json(
                    out,
                    {
                        "counts": current.counts,
                        "total": current.total,
                        "avg_wait": current.avg_wait,
                        "avg_run": current.avg_run,
                    },
                )
                return
            if not watch:
                out.print(stats_table(current, name))
                return
            with Live(stats_table(current, name), console=out) as live:
                try:
                    while True:
                        time.sleep(interval)
                        live.update(stats_table(monque.get_stats_sync(name), name))
                except KeyboardInterrupt:
                    pass

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
    @click.pass_obj
    def enqueue(
        ctx: Context,
        name: str,
        data: str,
        run_at: datetime | None,
        delay: float | None,
        unique_key: str | None,
        priority: int,
    ) -> None:
        """Enqueue a job."""
        with one_line_errors():
            try:
                payload = json.loads(data)
            except json.JSONDecodeError as exc:
                raise MonqueError(f"--data is not JSON: {exc}") from None
            job = ctx.monque().enqueue_sync(
                name, payload, run_at=run_at, delay=delay, unique_key=unique_key, priority=priority
            )
            if ctx.as_json:
                print_json(out, {**job_dict(job), "created": job.created})
            else:
                verb = "enqueued" if job.created else "already queued"
                out.print(
                    f"{verb} {job.name} {job.id} (next run {job.next_run_at:%Y-%m-%d %H:%M:%S} UTC)"
                )

    @cli.command()
    @click.pass_obj
    def schedules(ctx: Context) -> None:
        """Recurring jobs with their next run in their own time zone."""
        with one_line_errors():
            monque = ctx.monque()
            docs = monque.database[monque.options.collection].find(
                {"repeatInterval": {"$exists": True}, "status": {"$in": ["pending", "processing"]}}
            )
            recurring = [Job.from_document(d) for d in docs]  # type: ignore[union-attr]
            if ctx.as_json:
                print_json(out, [job_dict(j) for j in recurring])
            else:
                out.print(schedules_table(recurring))

    def main() -> None:
        cli(prog_name="monque")
