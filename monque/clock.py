"""Server time: the local clock corrected by a measured offset to the MongoDB server's clock.

Every time a worker compares or writes (is a job due, when does a lease expire, is a lease
expired) is taken from one ``ServerClock``, so instances whose clocks disagree still agree on
the server's time: a host whose clock runs ahead neither starts delayed jobs early nor takes
healthy jobs from other hosts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from monque.job import utc, utcnow
from monque.storage.calls import Call, Operation

__all__ = ["SKEW_WARNING", "ServerClock"]

# An offset above this is worth a warning: leases and due times are corrected, but the host's
# own logs and the producers that do not measure it are off by as much.
SKEW_WARNING = 1.0
_SAMPLES = 8


class ServerClock:
    """``now()`` is the server's time as far as this process can tell.

    ``local`` is the wall clock to correct (injectable for tests). ``measure()`` asks the
    server (``hello``'s ``localTime``) and takes the offset from the midpoint of the round
    trip; its error is at most half the round trip plus the server's millisecond rounding.
    """

    def __init__(self, local: Callable[[], datetime] = utcnow) -> None:
        self._local = local
        self.offset = 0.0
        self.measured = False
        # (round trip, offset) of the last few measurements; a clock step is adopted once
        # the samples from before it have aged out.
        self._samples: deque[tuple[float, float]] = deque(maxlen=_SAMPLES)

    def now(self) -> datetime:
        now = self._local() + timedelta(seconds=self.offset)
        # BSON dates keep milliseconds: truncate so values compare equal after a round trip.
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def measure(self) -> Operation[float]:
        """Ask the server for its time and update the offset; returns it in seconds."""
        before = self._local()
        reply: dict[str, Any] = yield Call("command", ("hello",))
        after = self._local()
        server = reply.get("localTime")
        if isinstance(server, datetime):
            midpoint = before + (after - before) / 2
            sample = (utc(server) - midpoint).total_seconds()
            # The sample with the shortest round trip has the smallest error bound: under
            # load one slow ``hello`` must not move every due time and lease by its delay.
            self._samples.append(((after - before).total_seconds(), sample))
            self.offset = min(self._samples)[1]
            self.measured = True
        return self.offset
