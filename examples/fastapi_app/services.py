"""App services that job handlers depend on."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pymongo import AsyncMongoClient


class Mailer:
    """Stands in for an SMTP or API client."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.outbox: list[tuple[str, str]] = []

    async def send(self, to: str, subject: str) -> None:
        self.outbox.append((to, subject))
        print(f"[mailer] {self.sender} -> {to}: {subject}")


class Users:
    """The app's users. ``welcomed`` is this app's own record that the welcome email went
    out: what makes it "once per address, ever" (a unique key cannot, see ``app.py``)."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.collection = client[database]["users"]

    async def create_indexes(self) -> None:
        await self.collection.create_index("email", unique=True)

    async def sign_up(self, email: str) -> dict[str, Any]:
        """The user with this email, created on the first sign-up."""
        now = datetime.now(timezone.utc)
        await self.collection.update_one(
            {"email": email},
            {"$setOnInsert": {"email": email, "welcomed": False, "signedUpAt": now}},
            upsert=True,
        )
        user = await self.collection.find_one({"email": email})
        assert user is not None
        return user

    async def welcomed(self, email: str) -> bool:
        user = await self.collection.find_one({"email": email}, {"welcomed": 1})
        return bool(user and user.get("welcomed"))

    async def mark_welcomed(self, email: str) -> None:
        await self.collection.update_one({"email": email}, {"$set": {"welcomed": True}})
