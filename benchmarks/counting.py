"""Count the commands a client sends, by command name (pymongo's CommandListener)."""

from __future__ import annotations

import threading
from collections import Counter

from pymongo import monitoring


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in {"hello", "isMaster", "ismaster", "ping", "endSessions"}:
            return  # driver housekeeping, not the engine's traffic
        with self._lock:
            self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reset(self) -> Counter[str]:
        with self._lock:
            snapshot, self.counts = self.counts, Counter()
        return snapshot
