"""Fault injection through the server's ``failCommand`` failpoint (mongod and SecantusDB)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient

__all__ = ["fail_command"]


@contextmanager
def fail_command(
    client: MongoClient[Any],
    commands: Sequence[str],
    *,
    times: int | None = 1,
    skip: int | None = None,
    error_code: int | None = None,
    close_connection: bool = False,
    block_ms: int | None = None,
    error_labels: Sequence[str] | None = None,
    app_name: str | None = None,
) -> Iterator[None]:
    """Arm ``failCommand`` for ``commands`` while the block runs, then switch it off.

    ``times=None`` keeps it on until the block ends; ``skip`` lets the first n calls through.
    """
    data: dict[str, Any] = {"failCommands": list(commands)}
    if error_code is not None:
        data["errorCode"] = error_code
    if close_connection:
        data["closeConnection"] = True
    if block_ms is not None:
        data["blockConnection"] = True
        data["blockTimeMS"] = block_ms
    if error_labels is not None:
        data["errorLabels"] = list(error_labels)
    if app_name is not None:
        data["appName"] = app_name
    mode: Any = "alwaysOn"
    if skip is not None:
        mode = {"skip": skip}
    elif times is not None:
        mode = {"times": times}
    client.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})
    try:
        yield
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
