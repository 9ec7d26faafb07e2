"""Fixtures of the interop suite: the TS build (``ts_core``) and one test's TS side (``ts``).

Set ``MONQUE_TS_CORE`` to a folder holding the TS Monque build (``dist/index.mjs`` +
``package.json``); without it, with no ``node``, or when npm cannot install the build's
dependencies, the tests that need it are skipped. ``test_golden.py`` needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from tests.interop.harness import TsCore, TsCoreUnavailable, TsHarness, prepare_ts_core


@pytest.fixture(scope="session")
def ts_core() -> TsCore:
    """The prepared TS build (``.cache/ts-monque-<hash>``), or a skip with the reason."""
    try:
        return prepare_ts_core()
    except TsCoreUnavailable as exc:
        pytest.skip(f"TS Monque unavailable: {exc}")


@pytest.fixture
def ts(
    ts_core: TsCore, mongodb_uri: str, mongo_db: Database[dict[str, Any]]
) -> Iterator[TsHarness]:
    """The TS library on this test's database; kills the processes a test left running
    (before ``mongo_db`` drops the database)."""
    harness = TsHarness(ts_core, mongodb_uri, mongo_db.name)
    try:
        yield harness
    finally:
        harness.close()
