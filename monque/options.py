"""Engine options: keyword arguments with documented defaults, validated at construction."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from monque.durations import to_seconds
from monque.errors import InvalidOptionError
from monque.policy import RetryPolicy

__all__ = ["MonqueOptions"]

_BSON_LIMIT = 16 * 1024 * 1024


def _default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class MonqueOptions:
    """All engine settings. Durations are stored in seconds.

    Attributes:
        collection: jobs collection name (shared with the TypeScript Monque).
        poll_interval: how often an idle worker looks for due jobs without a change stream
            (1 s).
        change_streams: wake workers from a change stream on the jobs collection when the
            server has them (replica sets, sharded clusters); polling otherwise (True).
        stream_poll_interval: how often a worker still polls while its change stream is
            healthy, a safety net only (10 s).
        max_retries: attempts before a job becomes ``failed`` (10).
        backoff_base: retry delay unit: ``2**failCount * backoff_base`` (60 s).
        max_backoff: cap on a retry delay (24 h).
        backoff_jitter: random spread of a retry delay, 0..1 (0: none).
        shutdown_timeout: how long ``stop()`` waits for running jobs (30 s).
        worker_concurrency: default jobs of one name running at once per instance (5).
        instance_concurrency: jobs running at once per instance over all names (None: no cap).
        lock_timeout: lease of a claimed job; heartbeats renew it (30 s).
        heartbeat_interval: how often running jobs' leases are renewed (10 s); at most half
            of ``lock_timeout``.
        recovery_interval: how often expired leases are swept back to pending (15 s).
        ts_lock_timeout: for jobs a TypeScript Monque worker holds (no Python lease) and that
            carry no ``lastHeartbeat``: how old ``lockedAt`` must be before the job counts as
            abandoned; match the TS ``lockTimeout`` (30 min, its default). With a heartbeat,
            ``max(lock_timeout, 3 * heartbeatInterval) + ts_shutdown_timeout`` of silence
            decides.
        ts_shutdown_timeout: the TypeScript workers' ``shutdownTimeout`` (30 s, its default):
            a stopping TS worker no longer heartbeats while it waits this long for its
            handlers, and must not look dead meanwhile.
        instance_id: this instance's owner token (host:pid:random by default).
        max_payload_size: largest job data in BSON bytes (None: MongoDB's 16 MiB).
        create_indexes: create the indexes in ``initialize()`` (True).
        retention: how long finished jobs are kept, per status, e.g.
            ``{"completed": timedelta(days=1), "failed": timedelta(days=30)}``; removed by a
            TTL index on ``expireAt`` (None: kept forever).
    """

    collection: str = "monque_jobs"
    poll_interval: float = 1.0
    change_streams: bool = True
    stream_poll_interval: float = 10.0
    max_retries: int = 10
    backoff_base: float = 60.0
    max_backoff: float = 24 * 3600.0
    backoff_jitter: float = 0.0
    shutdown_timeout: float = 30.0
    worker_concurrency: int = 5
    instance_concurrency: int | None = None
    lock_timeout: float = 30.0
    heartbeat_interval: float = 10.0
    recovery_interval: float = 15.0
    ts_lock_timeout: float = 1800.0
    ts_shutdown_timeout: float = 30.0
    instance_id: str = field(default_factory=_default_instance_id)
    max_payload_size: int | None = None
    create_indexes: bool = True
    retention: Mapping[str, float] | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_retries, self.backoff_base, self.max_backoff, self.backoff_jitter
        )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> MonqueOptions:
        """Build validated options; unknown names and bad values raise ``InvalidOptionError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(kwargs)
        for name in (
            "poll_interval",
            "stream_poll_interval",
            "backoff_base",
            "max_backoff",
            "shutdown_timeout",
            "lock_timeout",
            "heartbeat_interval",
            "recovery_interval",
            "ts_lock_timeout",
            "ts_shutdown_timeout",
        ):
            if name in values:
                values[name] = to_seconds(values[name], name, allow_zero=name == "shutdown_timeout")
        if values.get("retention") is not None:
            values["retention"] = _retention(values["retention"])
        options = cls(**values)
        options._validate()
        return options

    def _validate(self) -> None:
        _check_str(self.collection, "collection")
        if "$" in self.collection or "\0" in self.collection:
            raise InvalidOptionError("collection must not contain '$' or NUL")
        _check_str(self.instance_id, "instance_id")
        _check_int(self.max_retries, "max_retries", 1)
        _check_int(self.worker_concurrency, "worker_concurrency", 1)
        if self.instance_concurrency is not None:
            _check_int(self.instance_concurrency, "instance_concurrency", 1)
        if self.max_payload_size is not None:
            _check_int(self.max_payload_size, "max_payload_size", 1)
            if self.max_payload_size > _BSON_LIMIT:
                raise InvalidOptionError(f"max_payload_size cannot exceed {_BSON_LIMIT} bytes")
        for flag in ("create_indexes", "change_streams"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidOptionError(f"{flag} must be a bool")
        jitter = self.backoff_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise InvalidOptionError(f"backoff_jitter must be a number in [0, 1], got {jitter!r}")
        if self.max_backoff < self.backoff_base:
            raise InvalidOptionError("max_backoff must be >= backoff_base")
        if self.heartbeat_interval * 2 > self.lock_timeout:
            raise InvalidOptionError(
                "heartbeat_interval must be at most half of lock_timeout, so one slow or "
                "failed renewal does not let a running job's lease expire"
            )

    @property
    def payload_limit(self) -> int:
        return self.max_payload_size or _BSON_LIMIT


_FINISHED = ("completed", "failed", "cancelled")


def _retention(value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidOptionError("retention must map statuses to durations")
    result: dict[str, float] = {}
    for status, age in value.items():
        key = getattr(status, "value", status)
        if key not in _FINISHED:
            raise InvalidOptionError(f"retention applies to {', '.join(_FINISHED)}; got {status!r}")
        result[key] = to_seconds(age, f"retention[{key!r}]")
    return result


def _check_int(value: object, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise InvalidOptionError(f"{name} must be >= {minimum}, got {value}")


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOptionError(f"{name} must be a non-empty string, got {value!r}")
