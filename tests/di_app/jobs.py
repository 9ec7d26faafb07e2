"""The app's job handler classes."""

from __future__ import annotations

import itertools
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
    """Uses a per-job resource through dependency-injector's Closing marker."""

    used: ClassVar[list[Session]] = []

    @inject
    def handle(self, job: JobModel[Any], session: Session = Closing[Provide["session"]]) -> None:
        WithSession.used.append(session)
        if job.data == "fail":
            raise RuntimeError("job failed with its session open")
