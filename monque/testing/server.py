"""Start and stop the embedded SecantusDB wire server as a child process.

The server is a test surrogate only: production needs a real MongoDB 6+.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError

__all__ = ["EmbeddedMongo", "free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedMongo:
    """A SecantusDB server in its own process (no GIL shared with the tests).

    Restarting keeps the storage path and the port, so acknowledged writes survive and
    clients reconnect on their own, which is what outage tests need.
    """

    def __init__(
        self,
        storage_path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        standalone: bool = False,
        log_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._own_dir = storage_path is None
        self.storage_path = Path(storage_path or tempfile.mkdtemp(prefix="monque-secantus-"))
        self.port = port or free_port()
        self.standalone = standalone
        self._own_log = log_file is None
        self._log_path = Path(log_file) if log_file else self.storage_path.with_suffix(".log")
        self._failed = False  # a server that failed to start keeps its log for the reader
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> EmbeddedMongo:
        """Start the server and wait until it answers ``ping``."""
        if self.running:
            return self
        if importlib.util.find_spec("secantus") is None:
            raise RuntimeError(
                "no MongoDB server for the tests: set MONGODB_URI to one, or install the "
                "embedded server with pip install 'monque-py[embedded]'"
            )
        args = [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage_path),
            "--enable-test-commands",
            "--log-level",
            "WARNING",
        ]
        if self.standalone:
            args.append("--standalone")
        log = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:  # not ready, or Ctrl-C meanwhile: leave no server behind
            self.stop(kill=True)
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    self._failed = True
                    raise RuntimeError(
                        f"embedded MongoDB exited with {self._proc.returncode}; "
                        f"see {self._log_path}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self._failed = True
                        raise TimeoutError(
                            f"embedded MongoDB not ready after {timeout}s; see {self._log_path}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the server: SIGTERM (graceful) or SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        except BaseException:  # Ctrl-C while waiting: do not leave it running
            proc.kill()
            raise

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Stop the server and delete the storage it created itself."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.storage_path, ignore_errors=True)
            if self._own_log and not self._failed:
                self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedMongo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
