"""The app's container: the database, services, job providers, and Monque nested."""

from __future__ import annotations

from typing import Any

from dependency_injector import containers, providers
from pymongo import AsyncMongoClient

from monque_di import MonqueContainer

from . import jobs
from .services import Mailer, Users


class Container(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()

    mongo: providers.Singleton[AsyncMongoClient[dict[str, Any]]] = providers.Singleton(
        AsyncMongoClient, config.mongo.uri
    )
    mailer = providers.Singleton(Mailer, sender=config.mail.sender)
    users = providers.Singleton(Users, mongo, config.mongo.database)
    # Constructor injection: the job classes get their services from these providers, so
    # nothing needs @inject or container.wire().
    send_welcome_email = providers.Factory(jobs.SendWelcomeEmail, mailer=mailer, users=users)
    daily_digest = providers.Factory(jobs.DailyDigest, mailer=mailer)

    monque = providers.Container(
        MonqueContainer,
        connection=mongo,
        config=config.monque,
        jobs=providers.Object([jobs]),
        app=__self__,
    )
