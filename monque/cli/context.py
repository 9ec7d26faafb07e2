"""What every ``monque`` command shares: the global options, the connection, one-line errors."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource
from pymongo import MongoClient
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from rich.console import Console
from rich.text import Text

from monque.engine import Monque
from monque.errors import MonqueError, brief

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_TIMEOUT",
    "State",
    "check_uri",
    "describe",
    "fail",
    "global_options",
    "hosts_of",
    "one_line_errors",
    "pass_state",
    "record_sources",
    "redact",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_COLLECTION = "monque_jobs"
DEFAULT_TIMEOUT = 5.0


@dataclass
class State:
    """The global options (wherever on the command line they were given) and the connection."""

    uri: str | None = None
    db: str | None = None
    collection: str = DEFAULT_COLLECTION
    timeout: float = DEFAULT_TIMEOUT
    as_json: bool = False
    explicit: set[str] = field(default_factory=set)  # options given on the command line
    _client: MongoClient[dict[str, Any]] | None = None
    _out: Console | None = None
    _err: Console | None = None

    @property
    def out(self) -> Console:
        # Made per invocation: the width (COLUMNS) and the streams are the current ones.
        if self._out is None:
            self._out = Console(highlight=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = Console(stderr=True, highlight=False)
        return self._err

    @property
    def hosts(self) -> str:
        return hosts_of(self._client) if self._client is not None else "?"

    def monque(self) -> Monque:
        if not self.uri:
            raise click.UsageError("no MongoDB: pass --uri or set MONGODB_URI")
        check_uri(self.uri)
        ms = max(int(self.timeout * 1000), 1)
        # Timeouts the URI sets win over the default --timeout.
        given = self.uri.lower()
        timeouts: dict[str, Any] = {
            key: ms
            for key in ("serverSelectionTimeoutMS", "connectTimeoutMS")
            if key.lower() not in given
        }
        try:
            self._client = MongoClient(self.uri, tz_aware=True, appname="monque-cli", **timeouts)
        except (ConfigurationError, ValueError) as exc:
            raise click.UsageError(f"invalid --uri: {brief(exc)}") from None
        if self.db is None:
            try:
                self._client.get_default_database()
            except ConfigurationError:
                raise click.UsageError(
                    "no database: pass --db NAME (or set MONQUE_DB), or put it in the URI "
                    "(mongodb://host/NAME)"
                ) from None
        return Monque(self._client, database=self.db, collection=self.collection)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- output ---------------------------------------------------------------------------

    def say(self, *parts: str | Text | tuple[str, str]) -> None:
        """One line on stdout; every part is literal text (never rich markup)."""
        self.out.print(Text.assemble(*parts), soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)


pass_state = click.make_pass_decorator(State)


def hosts_of(client: Any) -> str:
    """The hosts a client connects to (the seeds until it has found the servers)."""
    try:
        addresses = list(client.topology_description.server_descriptions())
    except Exception:  # a client-like object without a topology: say nothing wrong
        return "?"
    return ",".join(f"{host}:{port}" for host, port in addresses) or "?"


_CREDENTIALS = re.compile(r"//[^@/]*@")


def redact(uri: str) -> str:
    return _CREDENTIALS.sub("//***@", uri)


def check_uri(uri: str) -> None:
    """A MongoDB connection string, or a usage error saying so (pymongo would take any other
    string for a host name and time out on it)."""
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise click.UsageError(
            f"invalid --uri {redact(uri)!r}: a MongoDB URI starts with mongodb:// or mongodb+srv://"
        )


# -- global options, before or after the subcommand -----------------------------------------


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        state = ctx.find_object(State)
        if state is not None:
            setattr(state, name, value)
            state.explicit.add(name)

    return callback


def global_options(f: F) -> F:
    """``--uri``/``--db``/``--collection``/``--timeout``/``--json`` on a subcommand too, so
    ``monque jobs list --json`` works like ``monque --json jobs list``."""
    common: dict[str, Any] = {"expose_value": False}
    options = [
        click.option(
            "--uri",
            metavar="URI",
            callback=_store("uri"),
            help="MongoDB connection string [env MONGODB_URI]",
            **common,
        ),
        click.option(
            "--db",
            metavar="NAME",
            callback=_store("db"),
            help="database (default: the URI's) [env MONQUE_DB]",
            **common,
        ),
        click.option(
            "--collection",
            metavar="NAME",
            callback=_store("collection"),
            help=f"jobs collection [default: {DEFAULT_COLLECTION}]",
            **common,
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            metavar="SECONDS",
            callback=_store("timeout"),
            help=f"how long to wait for MongoDB [default: {DEFAULT_TIMEOUT:g}]",
            **common,
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            default=False,
            callback=_store("as_json"),
            help="machine-readable output",
            **common,
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def record_sources(ctx: click.Context, state: State) -> None:
    """Remember which group-level options came from the command line (not env/defaults)."""
    for name in ("uri", "db", "collection", "timeout"):
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            state.explicit.add(name)


# -- errors ----------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit."""
    state = click.get_current_context().find_object(State)
    if state is not None:
        state.error(message)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def describe(exc: BaseException, state: State | None = None) -> str:
    """An error in one line; a connection failure says which host and how long was waited
    (never the driver's topology description)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    for error in chain:
        reason = _TIMEOUT_NOTE.sub("", brief(error)) or type(error).__name__
        hosts = state.hosts if state is not None and state.hosts != "?" else None
        if isinstance(error, ServerSelectionTimeoutError):
            waited = _TIMEOUT_NOTE.search(brief(error))
            # What the driver waited (the URI's own timeout may differ from --timeout).
            seconds = waited.group(1) if waited is not None else None
            if seconds is None and state is not None:
                seconds = f"{state.timeout:g}s"
            where = f" at {hosts}" if hosts else ""
            return f"cannot reach MongoDB{where} (waited {seconds or 'the timeout'}): {reason}"
        if isinstance(error, ConnectionFailure):
            where = f" at {hosts}" if hosts else ""
            return f"lost the connection to MongoDB{where}: {reason}"
        if isinstance(error, OperationFailure):
            return f"MongoDB refused the operation: {brief(error)}"
    return brief(exc)


_TIMEOUT_NOTE = re.compile(r",? Timeout: ([0-9.]+s).*$")


@contextmanager
def one_line_errors(state: State | None = None) -> Iterator[None]:
    """Errors as one clear line and exit code 1, never a traceback."""
    try:
        yield
    except (MonqueError, PyMongoError, TypeError, ValueError) as exc:
        fail(describe(exc, state))
