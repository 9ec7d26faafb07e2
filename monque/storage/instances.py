"""Live-instance registry (``<collection>_instances``): one document per running worker.

It makes a duplicated ``instance_id`` visible: two live instances sharing an owner token would
complete each other's jobs, so the second one is refused at start. A document whose lease ran
out (its process died) is taken over.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from monque.storage.calls import Call, Operation

__all__ = ["ensure_index", "register", "renew", "unregister"]


def register(instance_id: str, now: datetime, lease: float) -> Operation[bool]:
    """Claim ``instance_id``; False if a live instance holds it."""
    fields: dict[str, Any] = {
        "expiresAt": now + timedelta(seconds=lease),
        "lastSeen": now,
        "startedAt": now,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    try:
        yield Call("insert_one", ({"_id": instance_id, **fields},))
    except DuplicateKeyError:
        taken = yield Call(
            "update_one", ({"_id": instance_id, "expiresAt": {"$lt": now}}, {"$set": fields})
        )
        return bool(taken.matched_count)
    return True


def renew(instance_id: str, now: datetime, lease: float) -> Operation[None]:
    yield Call(
        "update_one",
        (
            {"_id": instance_id},
            {"$set": {"expiresAt": now + timedelta(seconds=lease), "lastSeen": now}},
        ),
        {"upsert": True},
    )


def unregister(instance_id: str) -> Operation[None]:
    yield Call("delete_one", ({"_id": instance_id},))


def ensure_index() -> Operation[None]:
    """TTL on ``expiresAt``: documents of crashed instances go away by themselves."""
    yield Call(
        "create_index", ([("expiresAt", 1)],), {"expireAfterSeconds": 0, "name": "monque_ttl"}
    )
