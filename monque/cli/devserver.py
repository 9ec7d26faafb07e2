"""``monque dev-server``: the embedded SecantusDB server for development, in the foreground.

A test surrogate speaking the MongoDB wire protocol (``pip install 'monque-py[embedded]'``),
not a production database: production needs a real MongoDB 6+.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

import click

from monque.cli.context import fail

__all__ = ["dev_server"]

HOST = "127.0.0.1"


def secantus_installed() -> bool:
    return importlib.util.find_spec("secantus") is not None


def port_in_use(port: int) -> bool:
    # Something listens there (a bind test would also refuse the TIME_WAIT sockets a server
    # that just stopped leaves behind for a minute).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


@click.command("dev-server")
@click.option("--port", default=27017, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data",
    "data_dir",
    default=".monque-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the data is kept between runs",
)
def dev_server(port: int, data_dir: Path) -> None:
    """Run a local MongoDB-compatible server (SecantusDB) for development until Ctrl-C.

    Its data persists in --data. Not for production: use a real MongoDB 6+ there.
    """
    if not secantus_installed():
        fail("the dev server needs SecantusDB: pip install 'monque-py[embedded]'")
    if port_in_use(port):
        fail(f"port {port} on {HOST} is in use (another MongoDB?); pick one with --port")
    from monque.testing.server import EmbeddedMongo

    data = data_dir.resolve()
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the data directory {data}: {exc.strerror or exc}")
    log_file = data.with_name(f"{data.name}.log")
    server = EmbeddedMongo(data, port, log_file=log_file)

    stop = threading.Event()
    previous = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            server.start(timeout=30)
        except (RuntimeError, TimeoutError, OSError) as exc:
            fail(f"the dev server did not start: {exc}")
        click.echo(f"monque dev server (SecantusDB, for development only) on {HOST}:{port}")
        click.echo(f"data: {data} (log: {log_file})")
        click.echo(f"URI: {server.uri}")
        click.echo(
            "e.g. export MONGODB_URI='"
            f"mongodb://{HOST}:{port}/myapp?directConnection=true' (the path names the "
            "database); Ctrl-C stops the server"
        )
        while not stop.wait(0.2):
            if not server.running:
                fail(f"the dev server exited; see {log_file}")
        click.echo("stopping the dev server", err=True)
    finally:
        server.stop()
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    click.echo("dev server stopped", err=True)
