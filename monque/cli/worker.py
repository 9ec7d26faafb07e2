"""``monque worker TARGET``: run workers until SIGINT/SIGTERM, then stop gracefully."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from pymongo.errors import PyMongoError

from monque.cli.context import State, check_uri, describe, global_options, hosts_of, pass_state
from monque.cli.logs import configured_logging
from monque.cli.targets import (
    is_container,
    load_target,
    prepare_container,
    resolve_engine,
)
from monque.engine import Monque
from monque.errors import MonqueError, brief

__all__ = ["worker"]

log = logging.getLogger("monque.cli")

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Exit(Exception):
    """A worker problem already worded for the user: one line, an optional hint."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


@click.command()
@click.argument("target")
@click.option("--concurrency", type=click.IntRange(min=1), help="jobs per worker at once")
@click.option("--names", help="comma-separated job names to process (default: all)")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="lowest level logged",
)
@click.option("-v", "--verbose", is_flag=True, help="log at DEBUG")
@click.option("-q", "--quiet", is_flag=True, help="log at WARNING")
@click.option("--log-json", is_flag=True, help="one JSON object per log line")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="serve Prometheus metrics on this port at /metrics (needs monque-py[prometheus])",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="address the metrics server binds to",
)
@global_options
@pass_state
def worker(
    state: State,
    target: str,
    concurrency: int | None,
    names: str | None,
    log_level: str,
    verbose: bool,
    quiet: bool,
    log_json: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run workers until SIGINT/SIGTERM, then stop gracefully (twice: at once).

    TARGET is module:attribute naming a Monque, a function returning one, or a container
    (class or instance) nesting monque_di's MonqueContainer. For a container, --uri/--db (or
    MONGODB_URI/MONQUE_DB), --collection and --timeout set the engine's connection, database,
    collection and server selection timeout; a Monque has its own connection, so these
    options on the command line are refused for it.

    Logs go to stderr: time, level, logger, message (--log-json or --json: one JSON object
    per line, with job_id, job_name and duration where they apply).

    --metrics-port serves Prometheus metrics (jobs per outcome, run time, lateness, queue
    depth; see monque.metrics) at http://HOST:PORT/metrics while the worker runs.
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q together: pick one")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else getattr(logging, log_level)
    only = [n.strip() for n in names.split(",") if n.strip()] if names else None
    log_json = log_json or state.as_json  # --json: what a script reading the logs wants
    with configured_logging(level, as_json=log_json):
        try:
            with _metrics_server(metrics_host, metrics_port) as attach:

                def started(monque: Monque) -> None:
                    _started(monque)
                    attach(monque)

                _run(state, target, only, concurrency, started)
        except _Exit as exc:
            _report(state, log_json, exc.message, exc.hint, exc.code)
        except (MonqueError, PyMongoError) as exc:
            log.debug("the worker failed", exc_info=True)
            _report(state, log_json, describe(exc), None, 1)


def _report(state: State, as_json: bool, message: str, hint: str | None, code: int) -> NoReturn:
    if as_json:
        log.error(message, extra={"hint": hint} if hint else None)
    else:
        state.error(message)
        if hint:
            state.err.print(f"hint: {hint}", markup=False, soft_wrap=True)
    sys.exit(code)


def _run(
    state: State,
    target: str,
    only: list[str] | None,
    concurrency: int | None,
    started: Callable[[Monque], None],
) -> None:
    obj = load_target(target)
    if is_container(obj):
        if state.uri:
            try:
                check_uri(state.uri)
            except click.UsageError as exc:
                raise _Exit(exc.message, code=2) from None
        _run_container(obj, state, only, concurrency, started)
        return
    given = sorted(f"--{n}" for n in state.explicit & {"uri", "db", "collection", "timeout"})
    if given and (isinstance(obj, Monque) or (callable(obj) and not isinstance(obj, type))):
        raise _Exit(
            f"{'/'.join(given)} cannot apply to {target}: a Monque has its own connection "
            "(drop the option, or name a monque_di container, whose connection the CLI sets)",
            code=2,
        )
    monque = resolve_engine(obj)
    monque.configure_workers(only=only, concurrency=concurrency)
    if not monque.worker_names:
        raise MonqueError("the target registers no workers")
    started(monque)
    try:
        # The engine handles SIGINT/SIGTERM while it runs: the first stops gracefully (it
        # says which running jobs it waits for), a second stops at once.
        monque.run_sync()
    except KeyboardInterrupt:  # before the engine took the signals over
        raise _Exit("interrupted before the worker started", code=130) from None
    log.info("monque worker stopped")


def _run_container(
    obj: Any,
    state: State,
    only: list[str] | None,
    concurrency: int | None,
    started: Callable[[Monque], None],
) -> None:
    try:
        from monque_di import run_worker
    except ImportError as exc:
        raise _Exit(f"a container TARGET needs monque_di: {exc}") from None
    try:
        app = prepare_container(
            obj,
            state.uri,
            state.db,
            collection=state.collection if "collection" in state.explicit else None,
            timeout=state.timeout if "timeout" in state.explicit else None,
        )
        run_worker(app, only=only, concurrency=concurrency, on_ready=started)
    except (MonqueError, PyMongoError):
        raise
    except KeyboardInterrupt:
        raise _Exit("interrupted before the worker started", code=130) from None
    except Exception as exc:
        raise _container_problem(exc, isinstance(obj, type)) from exc
    log.info("monque worker stopped")


def _started(monque: Monque) -> None:
    database = monque.database
    log.info(
        "monque worker %s on %s at %s: %s",
        monque.instance_id,
        database.name,
        hosts_of(database.client),
        ", ".join(monque.worker_names),
        extra={"instance_id": monque.instance_id, "database": database.name},
    )


@contextlib.contextmanager
def _metrics_server(host: str, port: int | None) -> Iterator[Callable[[Monque], None]]:
    """Serve ``prometheus_client``'s default registry at http://host:port/metrics while the
    worker runs; the callback it gives attaches ``MonqueMetrics`` to the engine."""
    if port is None:
        yield lambda monque: None
        return
    try:
        from prometheus_client import start_http_server

        from monque.metrics import MonqueMetrics
    except ImportError:
        raise _Exit(
            "--metrics-port needs prometheus_client",
            hint="pip install 'monque-py[prometheus]'",
        ) from None
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise _Exit(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", code=2
        ) from None
    attached: list[MonqueMetrics] = []

    def attach(monque: Monque) -> None:
        attached.append(MonqueMetrics(monque))

    bound = server.server_address[1]
    log.info("metrics at http://%s:%s/metrics", host, bound, extra={"metrics_port": bound})
    try:
        yield attach
    finally:
        for metrics in attached:
            metrics.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _container_problem(exc: BaseException, from_class: bool) -> _Exit:
    """Errors from building the container (a provider failing, a dependency missing) in one
    line, with what usually fixes them; the traceback is logged at DEBUG (-v)."""
    log.debug("the container could not be built", exc_info=exc)
    hints = ["-v shows the traceback"]
    if from_class:
        hints.insert(0, "TARGET names a container class: name the configured instance instead")
    return _Exit(
        f"the container could not be built: {type(exc).__name__}: {brief(exc)}",
        hint="; ".join(hints),
    )
