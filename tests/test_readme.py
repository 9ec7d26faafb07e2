"""Every Python snippet in the README runs as written, against the test server.

Worker snippets run until they did their work, then get Ctrl-C (SIGINT) and must exit 0
without a traceback; the others must run to completion. Each runs in a fresh process with
``MONGODB_URI`` set (the snippets read it, defaulting to a local server).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines) + "\n"


SNIPPETS = [_dedent(b) for b in BLOCKS]


def _wait(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.1)


def test_the_readme_has_the_snippets_this_file_knows() -> None:
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(
    index: int, mongodb_uri: str, mongo_client: MongoClient[dict[str, Any]], tmp_path: Path
) -> None:
    code = SNIPPETS[index]
    for name in ("app", "di_demo"):
        mongo_client.drop_database(name)
    script = tmp_path / f"snippet_{index}.py"
    script.write_text(code)
    env = {**os.environ, "MONGODB_URI": mongodb_uri, "PYTHONPATH": str(ROOT)}
    jobs = mongo_client["di_demo" if "di_demo" in code else "app"]["monque_jobs"]
    worker = "monque.run()" in code or "run_sync()" in code
    args = [sys.executable, str(script)]
    if "--worker" in code:
        first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        args.append("--worker")
    if not worker:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait(
            lambda: jobs.count_documents({"status": "completed"}) >= 1 or proc.poll() is not None,
            30,
            "a job completed by the snippet's worker",
        )
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert jobs.count_documents({"status": "processing"}) == 0, "handed back or finished"
    if "sending to" in code:
        assert "sending to a@example.com" in out
