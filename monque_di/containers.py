"""``MonqueContainer``: the engine as a dependency-injector resource an app nests.

    class AppContainer(containers.DeclarativeContainer):
        __self__ = providers.Self()
        config = providers.Configuration()
        mongo = providers.Singleton(AsyncMongoClient, config.mongo.uri)
        mailer = providers.Singleton(Mailer)
        send_email = providers.Factory(SendEmail, mailer=mailer)   # optional
        monque = providers.Container(
            MonqueContainer,
            connection=mongo,              # any handle monque.normalize_database accepts
            config=config.monque,          # database, producer_only, engine options
            jobs=providers.Object(["myapp.jobs"]),   # modules, packages or @Job classes
            app=__self__,                  # where @Job classes are resolved
        )

``await container.init_resources()`` initializes the engine, registers ``@Job`` schedules and,
unless ``producer_only``, starts processing; ``await container.shutdown_resources()`` stops it
gracefully. ``await container.monque.engine()`` is the ``Monque`` instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dependency_injector import containers, providers

from monque_di.lifecycle import engine_resource, engine_resource_sync

__all__ = ["MonqueContainer", "SyncMonqueContainer"]


class MonqueContainer(containers.DeclarativeContainer):
    """Engine provider for async apps (FastAPI, PyMongo async, motor)."""

    config = providers.Configuration()
    connection: providers.Dependency[Any] = providers.Dependency()
    jobs: providers.Dependency[Iterable[object]] = providers.Dependency(default=())
    app: providers.Dependency[Any] = providers.Dependency(default=None)

    engine = providers.Resource(engine_resource, connection, config, jobs, app)


class SyncMonqueContainer(MonqueContainer):
    """Engine provider for apps without an event loop (Flask, scripts, mongoengine).

    ``container.init_resources()`` (no await) initializes the engine and, unless
    ``producer_only``, runs a worker on a background thread; ``container.monque.engine()`` is
    the ``Monque`` instance, used through its ``*_sync`` methods.
    """

    engine = providers.Resource(
        engine_resource_sync,
        MonqueContainer.connection,
        MonqueContainer.config,
        MonqueContainer.jobs,
        MonqueContainer.app,
    )
