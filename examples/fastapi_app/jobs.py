"""Job handler classes: resolved from the container for every job."""

from __future__ import annotations

from typing import Any

from monque import Job as JobModel
from monque_di import Job

from .services import Mailer, Users


@Job(name="send-welcome-email", concurrency=4, max_retries=5)
class SendWelcomeEmail:
    def __init__(self, mailer: Mailer, users: Users) -> None:
        self.mailer = mailer
        self.users = users

    async def handle(self, job: JobModel[dict[str, Any]]) -> None:
        email = job.data["email"]
        # The check that makes it "once": a sign-up that came in after this address's email
        # went out may still have enqueued a job (its unique key was free again by then).
        if await self.users.welcomed(email):
            return
        await self.mailer.send(email, "Welcome!")
        # Marked after sending: at least once. A crash between the two sends it again on the
        # retry; mark first (and accept a lost email on a crash) for at most once.
        await self.users.mark_welcomed(email)


@Job(name="daily-digest", schedule="0 8 * * *", timezone="Europe/Paris")
class DailyDigest:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def handle(self, job: JobModel[Any]) -> None:
        await self.mailer.send("team@example.com", "Your daily digest")
