"""Regenerate ``tests/interop/golden/`` by running the TS library (``node/golden.mjs``).

    MONQUE_TS_CORE=/path/to/ts-monque python -m tests.interop.regenerate_golden

Uses ``MONGODB_URI`` when set, else starts the embedded test server. Each document is written
as canonical extended JSON (``bson.json_util`` loads it), keys in the order TS stored them.
Review the diff before committing: these files are the contract ``test_golden.py`` checks.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from monque.testing import EmbeddedMongo
from tests.interop.harness import TsCoreUnavailable, ejson, prepare_ts_core, run_script_sync

GOLDEN = Path(__file__).resolve().parent / "golden"


def _pretty(value: Any) -> str:
    """Canonical extended JSON, indented (the wrappers stay: it is plain JSON)."""
    return json.dumps(json.loads(ejson(value)), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    try:
        core = prepare_ts_core()
    except TsCoreUnavailable as exc:
        print(f"cannot regenerate: {exc}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            uri = stack.enter_context(EmbeddedMongo()).uri
        db_name = f"monque_golden_{uuid.uuid4().hex[:8]}"
        client: MongoClient[dict[str, Any]] = stack.enter_context(MongoClient(uri))
        stack.callback(client.drop_database, db_name)
        result = run_script_sync(core, "golden.mjs", {"uri": uri, "db": db_name}, timeout=120)
    GOLDEN.mkdir(exist_ok=True)
    for old in GOLDEN.glob("*.json"):
        old.unlink()
    for stem, doc in sorted(result["docs"].items()):
        (GOLDEN / f"{stem}.json").write_text(_pretty(doc), encoding="utf-8")
    (GOLDEN / "_indexes.json").write_text(_pretty(result["indexes"]), encoding="utf-8")
    print(f"wrote {len(result['docs'])} documents and _indexes.json to {GOLDEN}")
    print(f"TS build {core.package_version} on node {core.node_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
