"""Worker processes from a container: what ``monque worker module:container`` needs.

    monque_di.run_worker(container, only=["send-email"], concurrency=2)

blocks: it applies ``only``/``concurrency`` to the engine before any worker starts, initializes
the container's resources with the engine set up but not started (whatever ``producer_only``
says: this process is the worker), runs the engine in this thread until SIGINT/SIGTERM (or
``monque.request_stop()``), then shuts the container's resources down. It accepts containers
nesting ``MonqueContainer`` (run on an event loop of its own) and ``SyncMonqueContainer`` (run
with ``run_sync()``). ``configure_workers(container, ...)`` is the step on its own, for an app
that then calls ``init_resources()`` itself.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from dependency_injector import containers, providers

from monque.engine import Monque
from monque_di.containers import MonqueContainer, SyncMonqueContainer
from monque_di.errors import ContainerError
from monque_di.lifecycle import WorkerSettings, container_errors
from monque_di.resolution import ContextLocalResource

__all__ = ["configure_workers", "find_monque_container", "run_worker"]


def _instance(container: object) -> Any:
    if isinstance(container, providers.Container):
        return container.container
    if isinstance(container, type) and issubclass(container, containers.Container):
        return container()
    if isinstance(container, containers.Container):
        return container
    raise ContainerError(
        f"expected a dependency-injector container, got {type(container).__name__}"
    )


def _is_monque(container: object) -> bool:
    parent = getattr(container, "declarative_parent", None)
    return isinstance(parent, type) and issubclass(parent, MonqueContainer)


def find_monque_container(container: object) -> Any:
    """The ``MonqueContainer``/``SyncMonqueContainer`` instance ``container`` is or nests
    (exactly one); ``ContainerError`` otherwise. Accepts a container instance or class, or
    the ``providers.Container`` that nests one."""
    app = _instance(container)
    if _is_monque(app):
        return app
    found: dict[int, Any] = {}
    for provider in app.traverse(types=[providers.Container]):
        nested = getattr(provider, "container", None)
        if _is_monque(nested):
            found[id(nested)] = nested
    if not found:
        raise ContainerError(
            "the container nests no monque_di MonqueContainer or SyncMonqueContainer"
        )
    if len(found) > 1:
        raise ContainerError(
            f"the container nests {len(found)} MonqueContainers; pass the one to run "
            "(e.g. container.monque)"
        )
    return next(iter(found.values()))


def configure_workers(
    container: object,
    *,
    only: Iterable[str] | None = None,
    concurrency: int | None = None,
    start: bool = True,
) -> None:
    """Before ``init_resources()``: keep only the ``@Job`` workers named in ``only`` and/or
    set every worker's ``concurrency``, in the engine ``container`` nests; applied before any
    worker starts. ``start=False``: the resource sets the engine up but leaves starting it to
    the caller. Unknown names fail ``init_resources()`` (``WorkerRegistrationError``)."""
    nested = find_monque_container(container)
    if nested.engine.initialized:
        raise ContainerError("configure_workers() comes before init_resources()")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ContainerError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if isinstance(only, str):
        only = [n.strip() for n in only.split(",") if n.strip()]
    settings = WorkerSettings(
        tuple(only) if only is not None else None, concurrency, start=bool(start)
    )
    nested.worker_settings.override(providers.Object(settings))


def run_worker(
    container: object,
    *,
    only: Iterable[str] | None = None,
    concurrency: int | None = None,
    handle_signals: bool = True,
    on_ready: Callable[[Monque], object] | None = None,
) -> None:
    """Run the engine ``container`` nests as this process's worker until SIGINT/SIGTERM (with
    ``handle_signals``, on the main thread) or ``monque.request_stop()``; see the module.

    ``on_ready(monque)`` is called once the container is initialized, before the engine
    starts. Errors of the container are one-line ``MonqueError``s (``ContainerError``).
    """
    app = _instance(container)
    nested = find_monque_container(app)
    configure_workers(nested, only=only, concurrency=concurrency, start=False)
    try:
        parent = nested.declarative_parent
        if issubclass(parent, SyncMonqueContainer):
            _run_sync(app, nested, handle_signals, on_ready)
        else:
            asyncio.run(_run_async(app, nested, handle_signals, on_ready))
    finally:
        nested.worker_settings.reset_last_overriding()


def _init_resources(app: Any) -> Any:
    """The app's resources, less its per-job ones (``ContextLocalResource``): a worker process
    has no use for an instance of those outside its jobs."""
    if ContextLocalResource is not None:
        return app.init_resources(providers.Resource)
    return app.init_resources()  # pragma: no cover - dependency-injector < 4.49


def _run_sync(
    app: Any, nested: Any, handle_signals: bool, on_ready: Callable[[Monque], object] | None
) -> None:
    with container_errors():
        result = _init_resources(app)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise ContainerError(
            "the container has async resources: nest MonqueContainer, not SyncMonqueContainer"
        )
    try:
        monque: Monque = nested.engine()
        if on_ready is not None:
            on_ready(monque)
        monque.run_sync(handle_signals=handle_signals)
    finally:
        with container_errors():
            app.shutdown_resources()


async def _run_async(
    app: Any, nested: Any, handle_signals: bool, on_ready: Callable[[Monque], object] | None
) -> None:
    with container_errors():
        result = _init_resources(app)
        if inspect.isawaitable(result):
            await result
    installed: list[signal.Signals] = []
    try:
        monque: Monque = await nested.engine()
        if handle_signals and threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, monque.request_stop)
                installed.append(sig)
        if on_ready is not None:
            on_ready(monque)
        await monque.run()
    finally:
        for sig in installed:
            asyncio.get_running_loop().remove_signal_handler(sig)
        with container_errors():
            result = app.shutdown_resources()
            if inspect.isawaitable(result):
                await result
