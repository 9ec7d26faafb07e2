"""An app service that job handlers depend on."""

from __future__ import annotations


class Mailer:
    """Stands in for an SMTP or API client."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.outbox: list[tuple[str, str]] = []

    async def send(self, to: str, subject: str) -> None:
        self.outbox.append((to, subject))
        print(f"[mailer] {self.sender} -> {to}: {subject}")
