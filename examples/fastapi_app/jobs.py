"""Job handler classes: resolved from the container for every job."""

from __future__ import annotations

from typing import Any

from monque import Job as JobModel
from monque_di import Job

from .services import Mailer


@Job(name="send-welcome-email", concurrency=4)
class SendWelcomeEmail:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def handle(self, job: JobModel[dict[str, Any]]) -> None:
        await self.mailer.send(job.data["email"], "Welcome!")


@Job(name="daily-digest", schedule="0 8 * * *", timezone="Europe/Paris")
class DailyDigest:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def handle(self, job: JobModel[Any]) -> None:
        await self.mailer.send("team@example.com", "Your daily digest")
