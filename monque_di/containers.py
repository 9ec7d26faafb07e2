"""``MonqueContainer``: the engine as a dependency-injector resource an app nests.

    class AppContainer(containers.DeclarativeContainer):
        __self__ = providers.Self()
        config = providers.Configuration()
        mongo = providers.Singleton(AsyncMongoClient, config.mongo.uri)
        mailer = providers.Singleton(Mailer)
        session = providers.ContextLocalResource(open_session)    # one per job
        send_email = providers.Factory(SendEmail, mailer=mailer)   # optional
        monque = providers.Container(
            MonqueContainer,
            connection=mongo,              # any handle monque.normalize_database accepts
            config=config.monque,          # database, producer_only, known_jobs, engine options
            jobs=providers.Object(["myapp.jobs"]),   # modules, packages or @Job classes
            app=__self__,                  # where @Job classes and per-job resources are found
        )

``await container.init_resources()`` initializes the engine, registers ``@Job`` schedules and,
unless ``producer_only``, starts processing; ``await container.shutdown_resources()`` stops it
gracefully. ``await container.monque.engine()`` is the ``Monque`` instance.

``@Job`` classes get their dependencies from their provider in the app container (constructor
injection: nothing to wire), or through ``Provide[...]`` markers, which need the module wired:
``@inject`` on the method and ``container.wire(modules=[...])`` (or ``wiring_config``) before
``init_resources()``. Per-job resources are ``providers.ContextLocalResource`` (see
``monque_di.resolution``). ``monque_di.run_worker(container, only=..., concurrency=...)`` runs
a worker process from a container (what ``monque worker`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dependency_injector import containers, providers

from monque_di.lifecycle import WorkerSettings, engine_resource, engine_resource_sync

__all__ = ["MonqueContainer", "SyncMonqueContainer"]


class MonqueContainer(containers.DeclarativeContainer):
    """Engine provider for async apps (FastAPI, PyMongo async, motor)."""

    config = providers.Configuration()
    connection: providers.Dependency[Any] = providers.Dependency()
    jobs: providers.Dependency[Iterable[object]] = providers.Dependency(default=())
    # Optional (a Dependency's default=None would mean "no default": an undefined error).
    app: providers.Object[Any] = providers.Object(None)
    # Set through monque_di.configure_workers() before init_resources().
    worker_settings: providers.Object[WorkerSettings | None] = providers.Object(None)

    # connection and config are handed over as providers, resolved inside the resource, so
    # what resolving them fails with (an undefined option...) becomes a ContainerError.
    engine = providers.Resource(
        engine_resource,
        providers.Delegate(connection),
        providers.Delegate(config),
        jobs,
        app,
        worker_settings,
    )


class SyncMonqueContainer(MonqueContainer):
    """Engine provider for apps without an event loop (Flask, scripts, mongoengine).

    ``container.init_resources()`` (no await) initializes the engine and, unless
    ``producer_only``, runs a worker on a background thread (a worker that cannot start raises
    there); ``container.monque.engine()`` is the ``Monque`` instance, used through its
    ``*_sync`` methods.
    """

    engine = providers.Resource(
        engine_resource_sync,
        providers.Delegate(MonqueContainer.connection),
        providers.Delegate(MonqueContainer.config),
        MonqueContainer.jobs,
        MonqueContainer.app,
        MonqueContainer.worker_settings,
    )
