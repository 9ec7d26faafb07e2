"""Normalize whatever handle an app has into the one native handle the engine uses.

Accepted: a pymongo ``Database`` or ``MongoClient``; a PyMongo async ``AsyncDatabase`` or
``AsyncMongoClient``; a motor database or client (its sync pymongo delegate is used, as motor
itself runs everything on threads); a mongoengine connection alias (``get_db(alias)``). A client
gives its database from ``database=`` or from the URI's default. The result is a sync
``Database`` or an ``AsyncDatabase``; handles passed in are never closed by Monque.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.errors import ConfigurationError

__all__ = ["ACCEPTED_KINDS", "DatabaseHandle", "normalize_database"]

DatabaseHandle: TypeAlias = "Database[dict[str, Any]] | AsyncDatabase[dict[str, Any]]"

ACCEPTED_KINDS = (
    "a pymongo Database or MongoClient, a PyMongo AsyncDatabase or AsyncMongoClient, "
    "a motor AsyncIOMotorDatabase or AsyncIOMotorClient, or a mongoengine connection alias"
)


def normalize_database(handle: object, database: str | None = None) -> DatabaseHandle:
    """Return the native database for ``handle``; ``TypeError`` names the accepted kinds."""
    if isinstance(handle, (Database, AsyncDatabase)):
        return handle
    if isinstance(handle, (MongoClient, AsyncMongoClient)):
        return _client_database(handle, database)
    motor_delegate = _motor_delegate(handle)
    if motor_delegate is not None:
        return normalize_database(motor_delegate, database)
    if isinstance(handle, str):
        return _mongoengine_database(handle)
    raise TypeError(
        f"Monque needs {ACCEPTED_KINDS}; got {type(handle).__module__}.{type(handle).__qualname__}"
    )


def _client_database(
    client: MongoClient[Any] | AsyncMongoClient[Any], database: str | None
) -> DatabaseHandle:
    if database is not None:
        return client[database]
    try:
        return client.get_default_database()
    except ConfigurationError:
        raise TypeError(
            "a client was given without a database: pass database='name' or put the "
            "database in the connection string"
        ) from None


def _motor_delegate(handle: object) -> object | None:
    module = type(handle).__module__
    if not module.startswith("motor."):
        return None
    return getattr(handle, "delegate", None)


def _mongoengine_database(alias: str) -> DatabaseHandle:
    try:
        from mongoengine.connection import ConnectionFailure, get_db
    except ImportError:
        raise TypeError(
            f"a string is read as a mongoengine connection alias, but mongoengine is not "
            f"installed; pass {ACCEPTED_KINDS}"
        ) from None
    try:
        db: Database[dict[str, Any]] = get_db(alias)
    except ConnectionFailure as exc:
        raise TypeError(f"no mongoengine connection with alias {alias!r}: {exc}") from None
    return db
