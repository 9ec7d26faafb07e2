"""A motor client handed to the container (motor is deprecated upstream but still accepted).

Run: ``python -m examples.motor_app`` (embedded server when MONGODB_URI is unset).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import ExitStack
from typing import Any

from dependency_injector import containers, providers
from motor.motor_asyncio import AsyncIOMotorClient

from monque import Job as JobModel
from monque import Monque
from monque.testing import EmbeddedMongo, drain
from monque_di import Job, MonqueContainer


class Thumbnailer:
    def __init__(self) -> None:
        self.done: list[str] = []

    async def make(self, path: str) -> None:
        self.done.append(path)


@Job(name="thumbnail")
class MakeThumbnail:
    def __init__(self, thumbnailer: Thumbnailer) -> None:
        self.thumbnailer = thumbnailer

    async def handle(self, job: JobModel[dict[str, Any]]) -> None:
        await self.thumbnailer.make(job.data["path"])


class Container(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()
    motor_client = providers.Singleton(AsyncIOMotorClient, config.uri)
    thumbnailer = providers.Singleton(Thumbnailer)
    make_thumbnail = providers.Factory(MakeThumbnail, thumbnailer=thumbnailer)
    monque = providers.Container(
        MonqueContainer,
        connection=motor_client,
        config=config.monque,
        jobs=providers.Object([MakeThumbnail]),
        app=__self__,
    )


async def run(uri: str, database: str = "motor_example") -> list[str]:
    container = Container()
    container.config.from_dict({"uri": uri, "monque": {"database": database, "poll_interval": 0.1}})
    await container.init_resources()  # type: ignore[misc]
    monque: Monque = await container.monque.engine()
    for name in ("a.png", "b.png", "c.png"):
        await monque.enqueue("thumbnail", {"path": name})
    await drain(monque)
    await container.shutdown_resources()  # type: ignore[misc]
    done = sorted(container.thumbnailer().done)
    container.motor_client().close()
    return done


if __name__ == "__main__":
    with ExitStack() as stack:
        uri = os.environ.get("MONGODB_URI") or stack.enter_context(EmbeddedMongo()).uri
        print("thumbnails made:", asyncio.run(run(uri)))
