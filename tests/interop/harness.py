"""Run the TypeScript Monque (``@monque/core``) next to the Python library.

``prepare_ts_core`` makes a usable copy of a TS build (``dist/index.mjs`` + ``package.json``,
the folder named by ``MONQUE_TS_CORE``) under ``<repo>/.cache/``, installs its runtime
dependencies with npm once, and copies the scripts of ``tests/interop/node/`` into it. Scripts
talk JSON: a plain JSON document on stdin, canonical extended JSON on stdout (see
``node/common.mjs``). Job data crosses as canonical extended JSON strings so every BSON type
survives both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions

__all__ = [
    "DECODE",
    "ROOT",
    "TS_CORE_ENV",
    "JsonLineProcess",
    "NodeScriptError",
    "PyWorkerProcess",
    "TsCore",
    "TsCoreUnavailable",
    "TsWorker",
    "decode",
    "ejson",
    "prepare_ts_core",
    "run_script",
    "run_script_sync",
]

TS_CORE_ENV = "MONQUE_TS_CORE"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NODE_SOURCES = HERE / "node"
CACHE = ROOT / ".cache"
SCRIPTS_DIR = "interop"  # inside the prepared copy, next to dist/ and node_modules/
INSTALLED_MARKER = ".monque-interop-installed"
REQUIRED_MODULES = ("mongodb", "cron-parser")

# Decoding of script output: canonical types, and dates as aware UTC datetimes.
DECODE: JSONOptions = CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=timezone.utc)


def ejson(value: Any) -> str:
    """``value`` as canonical extended JSON (what the scripts decode with ``relaxed: false``)."""
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def decode(text: str) -> Any:
    """Canonical or relaxed extended JSON to Python values (aware UTC datetimes)."""
    return json_util.loads(text, json_options=DECODE)


class TsCoreUnavailable(Exception):
    """The TS build cannot be used here: the reason is a skip message."""


@dataclass(frozen=True)
class TsCore:
    """A prepared copy of the TS build: ``dist/index.mjs``, ``node_modules``, our scripts."""

    root: Path
    node: str
    node_version: str
    package_version: str

    @property
    def scripts(self) -> Path:
        return self.root / SCRIPTS_DIR

    def script(self, name: str) -> Path:
        path = self.scripts / name
        if not path.is_file():
            raise FileNotFoundError(f"no interop script {name!r} in {self.scripts}")
        return path


def _fingerprint(source: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "dist/index.mjs"):
        digest.update(name.encode())
        digest.update((source / name).read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between pytest processes (and xdist workers) preparing one copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _installed(target: Path, fingerprint: str) -> bool:
    marker = target / "node_modules" / INSTALLED_MARKER
    if not marker.is_file() or marker.read_text().strip() != fingerprint:
        return False
    return all(
        (target / "node_modules" / module / "package.json").is_file() for module in REQUIRED_MODULES
    )


def _copy_build(source: Path, target: Path) -> None:
    """Copy the build without ``node_modules``; the copies are writable (the source may not be)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name == "node_modules":
            continue
        dest = target / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dest, dirs_exist_ok=True, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(entry, dest)
    for path in [target, *target.rglob("*")]:
        if "node_modules" not in path.parts:
            path.chmod(0o755 if path.is_dir() else 0o644)


def _npm_install(target: Path, fingerprint: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise TsCoreUnavailable("npm is not on PATH (needed once to install the TS build's deps)")
    command = [npm, "install", "--no-audit", "--no-fund", "--omit=dev"]
    try:
        result = subprocess.run(
            command, cwd=target, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise TsCoreUnavailable(f"npm install in {target} took over 600s") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise TsCoreUnavailable(f"npm install failed in {target} ({result.returncode}):\n{tail}")
    (target / "node_modules" / INSTALLED_MARKER).write_text(fingerprint + "\n")


def _copy_scripts(target: Path) -> None:
    """Copy ``tests/interop/node/*.mjs`` into the copy, each file replaced atomically."""
    scripts = target / SCRIPTS_DIR
    scripts.mkdir(exist_ok=True)
    for source in sorted(NODE_SOURCES.glob("*.mjs")):
        fd, tmp = tempfile.mkstemp(dir=scripts, prefix=f".{source.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
        os.replace(tmp, scripts / source.name)


def prepare_ts_core(source: str | os.PathLike[str] | None = None) -> TsCore:
    """A ready copy of the TS build named by ``source`` (default: ``$MONQUE_TS_CORE``).

    Raises ``TsCoreUnavailable`` (a skip reason) when the variable is unset, the folder has no
    ``dist/index.mjs``, ``node`` is missing, or npm cannot install the dependencies.
    """
    if source is None:
        source = os.environ.get(TS_CORE_ENV) or None
        if source is None:
            raise TsCoreUnavailable(
                f"{TS_CORE_ENV} is not set (a folder with the TS Monque build: "
                "dist/index.mjs + package.json)"
            )
    build = Path(source).expanduser().resolve()
    for required in ("dist/index.mjs", "package.json"):
        if not (build / required).is_file():
            raise TsCoreUnavailable(f"{TS_CORE_ENV}={build} has no {required}")
    node = shutil.which("node")
    if node is None:
        raise TsCoreUnavailable("node is not on PATH")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    package = json.loads((build / "package.json").read_text())
    fingerprint = _fingerprint(build)
    target = CACHE / f"ts-monque-{fingerprint}"
    with _locked(CACHE / f"ts-monque-{fingerprint}.lock"):
        if not _installed(target, fingerprint):
            _copy_build(build, target)
            _npm_install(target, fingerprint)
        _copy_scripts(target)
    return TsCore(target, node, version, str(package.get("version", "?")))


# -- running scripts ---------------------------------------------------------------------------


class NodeScriptError(AssertionError):
    """A script failed, timed out, or printed no result."""


def _result(script: str, code: int | None, out: bytes, err: bytes) -> Any:
    stderr = err.decode(errors="replace").strip()
    if code != 0:
        raise NodeScriptError(f"{script} exited with {code}\n--- stderr ---\n{stderr}")
    lines = [line for line in out.decode().splitlines() if line.strip()]
    if not lines:
        raise NodeScriptError(f"{script} printed nothing\n--- stderr ---\n{stderr}")
    return decode(lines[-1])


async def run_script(
    core: TsCore,
    script: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Run ``node <script>`` with ``payload`` (plain JSON) on stdin; its decoded last line.

    Async, so Python workers on the test's event loop keep running meanwhile.
    """
    proc = await asyncio.create_subprocess_exec(
        core.node,
        str(core.script(script)),
        cwd=core.root,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise NodeScriptError(
            f"{script} did not finish within {timeout}s\n--- stderr ---\n"
            + err.decode(errors="replace")
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return _result(script, proc.returncode, out, err)


def run_script_sync(
    core: TsCore,
    script: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> Any:
    """``run_script`` without an event loop."""
    try:
        done = subprocess.run(
            [core.node, str(core.script(script))],
            cwd=core.root,
            input=json.dumps(payload).encode(),
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
        raise NodeScriptError(
            f"{script} did not finish within {timeout}s\n--- stderr ---\n"
            + err.decode(errors="replace")
        ) from None
    return _result(script, done.returncode, done.stdout, done.stderr)


# -- long-running processes --------------------------------------------------------------------


class JsonLineProcess:
    """A child process that reads one JSON document on stdin and prints JSON lines.

    A reader thread decodes every stdout line into ``messages``; stderr goes to a file so a
    chatty child can never block on a full pipe. ``ready`` is true once it printed
    ``{"ready": true}``.
    """

    def __init__(
        self,
        args: list[str],
        payload: Mapping[str, Any],
        *,
        cwd: Path,
        label: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` is the child's whole environment (None: this process's)."""
        self.label = label
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C of pytest does not reach it: teardown ends it
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(payload).encode())
        self.proc.stdin.close()
        self._reader = threading.Thread(target=self._read, name=f"{label}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                message = decode(line)
            except ValueError:
                message = {"unparsed": line}
            if not isinstance(message, dict):
                message = {"value": message}
            with self._lock:
                self.messages.append(message)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def ready(self) -> bool:
        return any(m.get("ready") is True for m in self.snapshot())

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.snapshot() if m.get("event") == name]

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def describe(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exited with {code}"
        lines = "\n".join(json.dumps(m, default=str) for m in self.snapshot()[-20:])
        return (
            f"{self.label} (pid {self.pid}) {state}\n--- last stdout ---\n{lines}"
            f"\n--- stderr ---\n{self.stderr_text()[-4000:]}"
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if not self.alive:
                raise AssertionError(f"{self.label} exited before it was ready\n{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label} not ready within {timeout}s\n{self.describe()}")
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful stop), then wait; SIGKILL if it does not end in time."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
            raise AssertionError(
                f"{self.label} ignored SIGTERM for {timeout}s\n{self.describe()}"
            ) from None
        await asyncio.to_thread(self._reader.join, 5)
        return code

    async def kill(self) -> None:
        """SIGKILL (a crash), then wait for the process to be gone."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)
        await asyncio.to_thread(self._reader.join, 5)

    def close(self) -> None:
        """Teardown: kill a leftover process and release its files."""
        if self.alive:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._reader.join(5)
        self._stderr.close()


class TsWorker(JsonLineProcess):
    """``node/worker.mjs``: a TS Monque worker (see that file for behaviours and output)."""

    def __init__(
        self, core: TsCore, payload: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            [core.node, str(core.script("worker.mjs"))],
            payload,
            cwd=core.root,
            label="TS worker",
            env={**os.environ, **(env or {})},
        )

    @property
    def instance_id(self) -> str | None:
        for message in self.snapshot():
            if message.get("ready") is True:
                value = message.get("instanceId")
                return str(value) if value is not None else None
        return None


class PyWorkerProcess(JsonLineProcess):
    """``python -m tests.interop.py_worker``: a Python Monque worker in its own process."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("COVERAGE_PROCESS_START", None)
        super().__init__(
            [sys.executable, "-m", "tests.interop.py_worker"],
            payload,
            cwd=ROOT,
            label="Python worker process",
            env=env,
        )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- one test's view of the TS library ---------------------------------------------------------


class TsOpError(Exception):
    """A TS Monque API call answered with one of its errors (``JobStateError``...)."""

    def __init__(self, name: str, message: str, info: Mapping[str, Any]) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.info = dict(info)


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("pass timezone-aware datetimes to the TS scripts")
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _script_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Harness keyword names to script fields: ``data`` -> ``dataEjson``, snake_case and
    datetimes converted."""
    names = {"unique_key": "uniqueKey", "run_at": "runAt", "delay_ms": "delayMs"}
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "data":
            out["dataEjson"] = ejson(value)
            continue
        if isinstance(value, datetime):
            value = _iso(value)
        out[names.get(key, key)] = value
    return out


def ts_job(name: str, data: Any = None, **options: Any) -> dict[str, Any]:
    """One job for ``TsHarness.enqueue``: options ``unique_key``, ``run_at`` (aware datetime),
    ``delay_ms``, ``now=True`` (``monque.now()``)."""
    return _script_args({"name": name, "data": data, **options})


class TsHarness:
    """The TS library on one test's database: scripts, management calls, worker processes.

    Every process started here is killed at teardown (``close``) if the test left it running.
    """

    def __init__(self, core: TsCore, uri: str, db_name: str) -> None:
        self.core = core
        self.uri = uri
        self.db_name = db_name
        self.processes: list[JsonLineProcess] = []

    def _payload(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"uri": self.uri, "db": self.db_name, **args}

    async def run(
        self,
        script: str,
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        **args: Any,
    ) -> Any:
        """Run a script to completion with ``{uri, db, **args}``; its decoded result."""
        return await run_script(self.core, script, self._payload(args), timeout=timeout, env=env)

    async def enqueue(
        self,
        *jobs: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        parallel: bool = False,
    ) -> list[Any]:
        """Enqueue ``ts_job(...)`` specs with ``monque.enqueue`` (one after the other, or all
        at once with ``parallel``); the jobs' ObjectIds, in order."""
        result = await self.run(
            "enqueue.mjs", jobs=list(jobs), options=dict(options or {}), parallel=parallel
        )
        return list(result["ids"])

    async def ops(
        self,
        *ops: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        initialize: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``ops.mjs``: each op is ``{"op": name, **args}`` (harness names allowed);
        returns ``[{"ok": True, "value": ...} | {"ok": False, "error": {...}}]``."""
        converted = [_script_args(op) for op in ops]
        result = await self.run(
            "ops.mjs",
            ops=converted,
            options=dict(options or {}),
            initialize=initialize,
            env=env,
        )
        return list(result["results"])

    async def op(self, op: str, *, env: Mapping[str, str] | None = None, **args: Any) -> Any:
        """One TS API call: its value, or ``TsOpError`` for the library's own errors."""
        ids = {k: str(v) for k, v in args.items() if k == "id"}
        (result,) = await self.ops({"op": op, **args, **ids}, env=env)
        if not result["ok"]:
            error = result["error"]
            raise TsOpError(error["name"], error["message"], error)
        return result["value"]

    async def get_job(self, job_id: Any) -> dict[str, Any] | None:
        """TS ``monque.getJob(id)``: the PersistedJob, decoded."""
        value = await self.op("getJob", id=str(job_id))
        return dict(value) if value is not None else None

    async def worker(
        self,
        behaviours: Mapping[str, str],
        *,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        **options: Any,
    ) -> TsWorker:
        """Start ``worker.mjs`` (TS options: pollInterval, lockTimeout, heartbeatInterval,
        instanceId, maxRetries, baseRetryInterval...) and wait until it is ready."""
        worker = TsWorker(
            self.core, self._payload({"behaviours": dict(behaviours), "options": options}), env
        )
        self.processes.append(worker)
        await worker.wait_ready(ready_timeout)
        return worker

    async def py_worker(
        self, behaviours: Mapping[str, str], *, ready_timeout: float = 30.0, **options: Any
    ) -> PyWorkerProcess:
        """Start a Python Monque worker process (``py_worker.py``) with ``Monque(**options)``."""
        worker = PyWorkerProcess(
            self._payload({"behaviours": dict(behaviours), "options": options})
        )
        self.processes.append(worker)
        await worker.wait_ready(ready_timeout)
        return worker

    def close(self) -> None:
        for process in self.processes:
            process.close()
