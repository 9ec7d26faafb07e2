"""Load what ``monque worker TARGET`` names: a Monque, a factory, or a DI container."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from monque.engine import Monque
from monque.errors import MonqueError

__all__ = ["is_container", "load_target", "prepare_container", "resolve_engine"]


def load_target(target: str) -> Any:
    """Import ``module:attribute`` (dotted attributes allowed), from the working directory too."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise MonqueError(f"TARGET must look like 'package.module:attribute', got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MonqueError(f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise MonqueError(f"{module_name!r} has no attribute {attribute!r}") from None
    return obj


def is_container(obj: object) -> bool:
    # A container's module has imported dependency-injector already: importing it here for
    # a Monque target would only slow the start down.
    containers = sys.modules.get("dependency_injector.containers")
    if containers is None:
        return False
    return isinstance(obj, containers.Container) or (
        inspect.isclass(obj) and issubclass(obj, containers.Container)
    )


def resolve_engine(obj: object) -> Monque:
    """A Monque from an instance or a zero-argument factory."""
    if isinstance(obj, Monque):
        return obj
    if callable(obj) and not inspect.isclass(obj):
        made = obj()
        if isinstance(made, Monque):
            return made
        raise MonqueError(f"the factory returned {type(made).__name__}, not a Monque")
    raise MonqueError(
        f"TARGET must name a Monque, a function returning one, or a monque_di container; "
        f"got {type(obj).__name__}"
    )


async def _async_client(uri: str, options: dict[str, Any]) -> AsyncIterator[Any]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **options)
    try:
        yield client
    finally:
        await client.close()


def _sync_client(uri: str, options: dict[str, Any]) -> Iterator[Any]:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri, **options)
    try:
        yield client
    finally:
        client.close()


def prepare_container(
    obj: Any,
    uri: str | None,
    database: str | None,
    *,
    collection: str | None = None,
    timeout: float | None = None,
) -> Any:
    """The app container ``monque_di.run_worker`` runs: a class is instantiated; the engine
    of the ``MonqueContainer`` it nests is pointed at ``uri`` (a client of the container's
    kind, closed with the container's resources), ``database`` and ``collection`` when
    given (``timeout``: the client's server selection timeout, seconds)."""
    from dependency_injector import providers

    from monque_di import SyncMonqueContainer, find_monque_container

    app = obj() if isinstance(obj, type) else obj
    nested = find_monque_container(app)
    settings = {"database": database, "collection": collection}
    chosen = {key: value for key, value in settings.items() if value is not None}
    if chosen:
        nested.config.from_dict({**(nested.config() or {}), **chosen})
    if uri is not None:
        options: dict[str, Any] = {"appname": "monque-worker"}
        if timeout is not None:
            options["serverSelectionTimeoutMS"] = max(int(timeout * 1000), 1)
        is_sync = issubclass(nested.declarative_parent, SyncMonqueContainer)
        client = providers.Resource(_sync_client if is_sync else _async_client, uri, options)
        nested.connection.override(client)
    return app
