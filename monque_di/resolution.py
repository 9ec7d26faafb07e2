"""Per-execution resolution of ``@Job`` classes from the app's container.

The app's own provider for the class (a ``Factory``/``Singleton``... whose ``provides`` is the
class) wins, so its arguments and any override active at that moment apply; without one the
class is built directly, with whatever ``@inject``/``Provide[...]`` wiring the app set up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dependency_injector import providers

from monque.job import Job
from monque.worker import Handler
from monque_di.decorators import JobSpec
from monque_di.errors import JobResolutionError

__all__ = ["Resolver", "find_provider", "make_handler"]

Resolver = Callable[[], Any]


def find_provider(app: Any, cls: type) -> providers.Provider[Any] | None:
    """The app container's provider that builds ``cls``, if it declares one."""
    if app is None:
        return None
    for provider in app.traverse():
        if getattr(provider, "provides", None) is cls:
            return provider  # type: ignore[no-any-return]
    return None


def resolver_for(app: Any, spec: JobSpec) -> Resolver:
    provider = find_provider(app, spec.cls)
    if provider is not None:
        return provider
    return spec.cls


def make_handler(spec: JobSpec, resolve: Resolver) -> Handler:
    """A worker handler that builds a fresh instance for each job and calls its ``handle``."""
    if spec.is_async:

        async def run_async(job: Job[Any]) -> Any:
            instance = resolve()
            if inspect.isawaitable(instance):  # a provider with async dependencies
                instance = await instance
            return await instance.handle(job)

        return run_async

    def run_sync(job: Job[Any]) -> Any:  # runs on the worker's thread pool
        return resolve().handle(job)

    return run_sync


async def check_resolvable(spec: JobSpec, resolve: Resolver) -> None:
    """Build one instance now, so a missing dependency fails at start, not at the first job."""
    try:
        instance = resolve()
        if inspect.isawaitable(instance):
            await instance
    except Exception as exc:
        raise JobResolutionError(_message(spec, exc)) from exc


def check_resolvable_sync(spec: JobSpec, resolve: Resolver) -> None:
    try:
        instance = resolve()
    except Exception as exc:
        raise JobResolutionError(_message(spec, exc)) from exc
    if inspect.isawaitable(instance):
        close = getattr(instance, "close", None)
        if close is not None:
            close()
        raise JobResolutionError(
            f"job {spec.name!r}: {spec.cls.__qualname__} has async dependencies; use the async "
            "MonqueContainer"
        )


def _message(spec: JobSpec, exc: Exception) -> str:
    return (
        f"job {spec.name!r}: cannot build {spec.cls.__module__}.{spec.cls.__qualname__} from the "
        f"container ({type(exc).__name__}: {exc}); declare a provider for it in the app "
        "container, or wire its module so @inject/Provide[...] can fill its arguments"
    )
