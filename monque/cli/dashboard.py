"""``monque dashboard``: serve the web dashboard (needs monque-py[dashboard])."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import click

from monque.cli.context import State, global_options, one_line_errors, pass_state
from monque.cli.logs import configured_logging
from monque.storage.calls import Call

__all__ = ["dashboard"]

log = logging.getLogger("monque.dashboard")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--allow-actions",
    is_flag=True,
    help="enable retry, cancel, delete and reschedule (read-only without it)",
)
@click.option(
    "--basic-auth",
    envvar="MONQUE_DASHBOARD_BASIC_AUTH",
    metavar="USER:PASSWORD",
    help="ask for HTTP basic auth [env MONQUE_DASHBOARD_BASIC_AUTH]",
)
@click.option(
    "--token",
    envvar="MONQUE_DASHBOARD_TOKEN",
    help="accept 'Authorization: Bearer TOKEN' [env MONQUE_DASHBOARD_TOKEN]",
)
@click.option(
    "--poll-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="seconds between live updates where the server has no change streams",
)
@click.option(
    "--no-create-indexes",
    is_flag=True,
    help="do not create the dashboard's indexes (docs/dashboard.md lists them)",
)
@global_options
@pass_state
def dashboard(
    state: State,
    host: str,
    port: int,
    allow_actions: bool,
    basic_auth: str | None,
    token: str | None,
    poll_interval: float,
    no_create_indexes: bool,
) -> None:
    """Serve the web dashboard: queue overview, jobs, schedules, live updates.

    Binds to 127.0.0.1 unless --host says otherwise; bound elsewhere, protect it with
    --basic-auth or --token (or a proxy). Read-only unless --allow-actions.
    """
    try:
        import uvicorn

        from monque.dashboard import Auth, create_app
    except ImportError as exc:  # pragma: no cover - the extra is installed in the suite
        raise click.UsageError(
            f"the dashboard needs its extra: pip install 'monque-py[dashboard]' ({exc.name} "
            "is missing)"
        ) from None
    auth = None
    with one_line_errors(state):
        if basic_auth is not None or token is not None:
            user, sep, password = (basic_auth or "").partition(":")
            if basic_auth is not None and not sep:
                raise click.BadParameter("expected USER:PASSWORD", param_hint="--basic-auth")
            auth = Auth(
                username=user if basic_auth is not None else None,
                password=password if basic_auth is not None else None,
                token=token,
            )
        engine = state.monque()
        engine.jobs.call_sync(Call("command", ({"ping": 1},)))  # fail now, in one line
        db_name = engine.database.name
        state.close()
    if auth is None and not _is_loopback(host):
        state.error(
            f"warning: serving on {host} without --basic-auth or --token: anyone who can reach "
            "this port sees the jobs' data"
        )
    app = create_app(
        _async_database(state, db_name),
        collection=state.collection,
        allow_actions=allow_actions,
        auth=auth,
        create_indexes=not no_create_indexes,
        poll_interval=poll_interval,
    )
    with configured_logging(logging.INFO, as_json=state.as_json):
        log.info(
            "dashboard at http://%s:%s/ (%s)",
            host,
            port,
            "actions enabled" if allow_actions else "read-only",
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
            lifespan="off",
        )


def _async_database(state: State, name: str) -> Any:
    from pymongo import AsyncMongoClient

    assert state.uri is not None
    ms = max(int(state.timeout * 1000), 1)
    # As the other commands: a timeout the URI sets wins over --timeout.
    timeouts: dict[str, Any] = (
        {} if "serverselectiontimeoutms" in state.uri.lower() else {"serverSelectionTimeoutMS": ms}
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        state.uri, tz_aware=True, appname="monque-dashboard", **timeouts
    )
    return client[name]
