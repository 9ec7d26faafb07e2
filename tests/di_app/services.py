"""Services the app's jobs depend on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import ClassVar

_ids = itertools.count()


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, to: str) -> None:
        self.sent.append(to)


class FakeMailer(Mailer):
    """What a test puts in place of the real mailer."""


class Session:
    """A per-job resource: opened for a job, closed after it."""

    opened: ClassVar[list[Session]] = []

    def __init__(self) -> None:
        self.id = next(_ids)
        self.closed = False
        Session.opened.append(self)

    def close(self) -> None:
        self.closed = True


def open_session() -> Iterator[Session]:
    session = Session()
    try:
        yield session
    finally:
        session.close()
