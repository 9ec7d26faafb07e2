"""The app's containers: services, an explicit provider for one job, and Monque nested."""

from __future__ import annotations

from typing import Any

from dependency_injector import containers, providers

from monque_di import MonqueContainer, SyncMonqueContainer
from tests.di_app import jobs
from tests.di_app.services import Mailer, open_session


class AppContainer(containers.DeclarativeContainer):
    """An async app (FastAPI-style)."""

    __self__ = providers.Self()
    config = providers.Configuration()
    connection: providers.Dependency[Any] = providers.Dependency()

    mailer = providers.Singleton(Mailer)
    session = providers.ContextLocalResource(open_session)  # one per job
    send_email = providers.Factory(jobs.SendEmail, mailer=mailer)
    session_in_init = providers.Factory(jobs.SessionInInit, session=session)

    monque = providers.Container(
        MonqueContainer,
        connection=connection,
        config=config.monque,
        jobs=providers.Object([jobs]),
        app=__self__,
    )


class SyncAppContainer(containers.DeclarativeContainer):
    """The same app without an event loop (Flask/mongoengine-style)."""

    __self__ = providers.Self()
    config = providers.Configuration()
    connection: providers.Dependency[Any] = providers.Dependency()

    mailer = providers.Singleton(Mailer)
    session = providers.ContextLocalResource(open_session)
    send_email = providers.Factory(jobs.SendEmail, mailer=mailer)
    session_in_init = providers.Factory(jobs.SessionInInit, session=session)

    monque = providers.Container(
        SyncMonqueContainer,
        connection=connection,
        config=config.monque,
        jobs=providers.Object([jobs]),
        app=__self__,
    )
