"""The FastAPI app: the container's resources live in the lifespan."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from monque import Monque

from .container import Container


def create_container(uri: str | None = None, database: str = "fastapi_example") -> Container:
    container = Container()
    container.config.from_dict(
        {
            "mongo": {
                "uri": uri or os.environ.get("MONGODB_URI", "mongodb://localhost:27017"),
                "database": database,
            },
            "mail": {"sender": "noreply@example.com"},
            "monque": {"database": database, "poll_interval": 0.2},
        }
    )
    return container


class SignUp(BaseModel):
    email: str


def create_app(container: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.init_resources()  # type: ignore[misc]
        await container.users().create_indexes()
        yield
        await container.shutdown_resources()  # type: ignore[misc]
        await container.mongo().close()

    app = FastAPI(lifespan=lifespan)
    app.state.container = container

    @app.post("/signups")
    async def sign_up(body: SignUp) -> dict[str, Any]:
        users = container.users()
        user = await users.sign_up(body.email)
        if user["welcomed"]:
            return {"job": None, "created": False, "welcomed": True}
        monque: Monque = await container.monque.engine()
        # A unique key de-duplicates only while its job is pending or running: a double
        # submit, a retried request or two tabs signing up at once get this one job, not a
        # second email. Once the job has finished the key is free again, so it cannot mean
        # "once per address, ever": that is the user's `welcomed` flag, checked above and by
        # the handler itself.
        job = await monque.enqueue(
            "send-welcome-email", {"email": body.email}, unique_key=f"welcome:{body.email}"
        )
        return {"job": str(job.id), "created": job.created, "welcomed": False}

    return app
