"""The app's job handler classes."""

from __future__ import annotations

import itertools
import threading
from typing import Any, ClassVar

from dependency_injector.wiring import Closing, Provide, inject

from monque import Job as JobModel
from monque_di import Job
from tests.di_app.services import Mailer, Session

instances = itertools.count()


@Job(name="send-email", concurrency=2)
class SendEmail:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self.serial = next(instances)

    async def handle(self, job: JobModel[dict[str, str]]) -> None:
        await self.mailer.send(job.data["to"])


@Job(name="nightly-report", schedule="0 3 * * *", timezone="Europe/Berlin")
class NightlyReport:
    """A sync handler with no dependencies; also a recurring job."""

    runs: ClassVar[list[Any]] = []

    def handle(self, job: JobModel[Any]) -> None:
        NightlyReport.runs.append(job.id)


@Job(name="with-session")
class WithSession:
    """Uses a per-job resource (a ContextLocalResource) through the Closing marker: needs
    @inject and the module wired (container.wire(modules=[jobs]))."""

    used: ClassVar[list[Session]] = []

    @inject
    def handle(self, job: JobModel[Any], session: Session = Closing[Provide["session"]]) -> None:
        WithSession.used.append(session)
        if job.data == "fail":
            raise RuntimeError("job failed with its session open")


@Job(name="hold-session")
class HoldSession:
    """Keeps its per-job session open until ``gate`` is set, then reports whether it was
    still open: another job finishing meanwhile must not have closed it."""

    gate: ClassVar[threading.Event] = threading.Event()
    holding: ClassVar[threading.Event] = threading.Event()
    seen: ClassVar[list[tuple[Session, bool]]] = []

    @inject
    def handle(self, job: JobModel[Any], session: Session = Closing[Provide["session"]]) -> None:
        HoldSession.holding.set()
        if not HoldSession.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        HoldSession.seen.append((session, session.closed))


@Job(name="session-in-init")
class SessionInInit:
    """Gets a per-job resource through its provider (constructor injection: nothing to wire);
    monque_di closes it when the job ends."""

    seen: ClassVar[list[tuple[Session, bool]]] = []

    def __init__(self, session: Session) -> None:
        self.session = session

    def handle(self, job: JobModel[Any]) -> None:
        SessionInInit.seen.append((self.session, self.session.closed))
