"""Logging for ``monque worker``: the library logs under ``monque`` and never configures
logging itself; the command does, on the root logger (so the app's own loggers show too).

Text: ``2025-01-02 03:04:05.678 INFO monque.worker.jobs: send-email 65f… completed in 0.012s``.
JSON (``--log-json``): one object per line with ``time`` (ISO-8601 UTC), ``level``,
``logger``, ``message``, the fields the record carries as ``extra`` (``job_id``, ``job_name``,
``duration``, ...) and ``exception`` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO, Any

__all__ = ["JsonFormatter", "TextFormatter", "configured_logging"]

# Attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """Local time to the millisecond, level, logger, message (and a traceback if any)."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
        )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _not_cancelled_noise(record: logging.LogRecord) -> bool:
    """Drop asyncio's "Exception in callback ...: CancelledError" (or InvalidStateError)
    records: pending providers of a container whose start failed are cancelled, and
    dependency-injector's callbacks then fail on them (reading a cancelled future, or setting
    the result of one). Noise after an error already reported in one line; at DEBUG they
    stay."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (
        record.name == "asyncio"
        and isinstance(exc, (asyncio.CancelledError, asyncio.InvalidStateError))
        and logging.getLogger().getEffectiveLevel() > logging.DEBUG
    )


@contextmanager
def configured_logging(
    level: int, *, as_json: bool = False, stream: IO[str] | None = None
) -> Iterator[None]:
    """Log records of ``level`` and above to stderr while the block runs (then restore)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(_not_cancelled_noise)
    saved_level = root.level
    driver = logging.getLogger("pymongo")
    saved_driver = driver.level
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings (e.g. the container's) as log records too
    if level < logging.INFO:
        # The driver logs every command at DEBUG: -v is about Monque, not the wire.
        driver.setLevel(logging.INFO)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(saved_level)
        driver.setLevel(saved_driver)
        handler.flush()
