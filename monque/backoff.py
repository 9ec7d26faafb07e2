"""Retry delays: exponential, capped, optionally jittered."""

from __future__ import annotations

import random

__all__ = ["retry_delay"]


def retry_delay(
    fail_count: int,
    base: float,
    cap: float,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``fail_count + 1``: ``min(2**fail_count * base, cap)``.

    ``jitter`` spreads the delay uniformly over +-jitter of itself (still capped) so a burst of
    failures does not retry in lockstep. Always > 0: a failure is never retried immediately.
    """
    exponent = min(max(fail_count, 0), 62)  # 2**62 * base is past any cap; avoids overflow
    delay = min(float(2**exponent) * base, cap)
    if jitter:
        spread = (rng or random).uniform(-jitter, jitter)
        delay = min(delay * (1 + spread), cap)
    return max(delay, 1e-3)
