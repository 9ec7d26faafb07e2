"""Retry policy: the engine's defaults, overridable per worker."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_base: float
    max_backoff: float
    backoff_jitter: float = 0.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def with_overrides(self, **overrides: Any) -> RetryPolicy:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def retries(self, error: BaseException) -> bool:
        """False for errors that must fail the job at once (``PermanentError`` and the like)."""
        from monque.errors import PermanentError

        return not isinstance(error, (PermanentError, *self.non_retryable))
