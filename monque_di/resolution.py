"""Per-execution resolution of ``@Job`` classes from the app's container.

The app's own provider for the class (a ``Factory``/``Singleton``... whose ``provides`` is the
class) wins, so its arguments and any override active at that moment apply; without one the
class is built directly, with whatever ``@inject``/``Provide[...]`` wiring the app set up.

Per-job resources are dependency-injector's ``providers.ContextLocalResource``: one instance
per execution context. Every job runs in a scope of its own: a context in which none of the
app's ``ContextLocalResource`` providers is initialized (whatever the code that started the
worker resolved), in which the handler class is built and ``handle`` runs, and at whose end
every one of them initialized there is shut down (dependents first), after the handler
returned or raised. So a per-job resource injected through the class's provider, through
``Provide[...]`` or through ``Closing[Provide[...]]`` is one instance per job, closed when
that job ends (``Closing`` closes it as ``handle`` returns, the same moment).

A plain ``providers.Resource`` is one instance for the whole app until
``shutdown_resources()``: never put ``Closing[...]`` on one in a handler (overlapping jobs
would share it and the first to finish would close it under the others); a
``MonqueDIWarning`` says so at start.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from dependency_injector import providers

from monque.job import Job
from monque.worker import Handler
from monque_di.decorators import JobSpec
from monque_di.errors import JobResolutionError, MonqueDIWarning

__all__ = [
    "Resolver",
    "check_resolvable",
    "check_resolvable_sync",
    "check_wiring",
    "find_provider",
    "make_handler",
    "per_job_resources",
    "resolver_for",
]

log = logging.getLogger("monque_di")

Resolver = Callable[[], Any]

# dependency-injector >= 4.49; without it there are no per-job resources to manage.
ContextLocalResource: Any = getattr(providers, "ContextLocalResource", None)


def discard(awaitable: object) -> None:
    """Close an awaitable nobody will await (a coroutine), so it is not reported as never
    awaited."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


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


# -- the per-execution scope --------------------------------------------------------------


def per_job_resources(app: Any) -> list[Any]:
    """The app's ``ContextLocalResource`` providers (overrides included), dependents first.

    Looked up for every execution, so overrides made after start apply.
    """
    if app is None or ContextLocalResource is None:
        return []
    found = {id(p): p for p in app.traverse(types=[ContextLocalResource])}
    remaining = list(found.values())
    needs = {
        id(p): {id(d) for d in p.traverse(types=[ContextLocalResource]) if d is not p}
        for p in remaining
    }
    ordered: list[Any] = []
    while remaining:
        # Close first what no other remaining resource is built from.
        needed = set().union(*(needs[id(p)] for p in remaining))
        free = [p for p in remaining if id(p) not in needed] or remaining[:1]
        ordered.extend(free)
        remaining = [p for p in remaining if p not in free]
    return ordered


def _open(resources: Iterable[Any]) -> None:
    """Forget, in this context only, any instance inherited from the enclosing context."""
    for resource in resources:
        resource.reset_state()


def _close_sync(resources: Iterable[Any]) -> BaseException | None:
    first: BaseException | None = None
    for resource in resources:
        if not resource.initialized:
            continue
        try:
            result = resource.shutdown()
            if inspect.isawaitable(result):
                # An async resource in a sync handler: nothing here can await it.
                discard(result)
                raise JobResolutionError(
                    f"per-job resource {resource} is async; a sync handler cannot close it "
                    "(make handle() async or the resource sync)"
                )
        except Exception as exc:
            log.warning("closing per-job resource %s failed", resource, exc_info=True)
            first = first or exc
    return first


async def _close_async(resources: Iterable[Any]) -> BaseException | None:
    first: BaseException | None = None
    for resource in resources:
        if not resource.initialized:
            continue
        try:
            result = resource.shutdown()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.warning("closing per-job resource %s failed", resource, exc_info=True)
            first = first or exc
    return first


def make_handler(spec: JobSpec, resolve: Resolver, app: Any = None) -> Handler:
    """A worker handler that builds a fresh instance for each job and calls its ``handle``,
    inside a per-execution scope for the app's per-job resources."""
    if spec.is_async:

        async def run_async(job: Job[Any]) -> Any:
            # Monque runs every async handler in a task of its own, so the context is this
            # job's alone (a copy of the worker's): the states reset here stay in it.
            resources = per_job_resources(app)
            _open(resources)
            try:
                instance = resolve()
                if inspect.isawaitable(instance):  # a provider with async dependencies
                    instance = await instance
                result = await instance.handle(job)
            except BaseException:
                await _close_async(resources)
                raise
            failure = await _close_async(resources)
            if failure is not None:
                raise failure
            return result

        return run_async

    def scoped(job: Job[Any]) -> Any:
        resources = per_job_resources(app)
        _open(resources)
        try:
            result = resolve().handle(job)
        except BaseException:
            _close_sync(resources)
            raise
        failure = _close_sync(resources)
        if failure is not None:
            raise failure
        return result

    def run_sync(job: Job[Any]) -> Any:  # runs on a thread of its own
        return contextvars.copy_context().run(scoped, job)

    return run_sync


# -- checks at start ----------------------------------------------------------------------


async def check_resolvable(spec: JobSpec, resolve: Resolver, app: Any = None) -> None:
    """Build one instance now, so a missing dependency fails at start, not at the first job.

    It is built in a scope of its own (a task, so a copied context), whose per-job resources
    are closed at once: the context that starts the worker keeps none of them.
    """

    async def build() -> None:
        resources = per_job_resources(app)
        _open(resources)
        try:
            instance = resolve()
            if inspect.isawaitable(instance):
                await instance
        finally:
            await _close_async(resources)

    try:
        await asyncio.ensure_future(build())
    except Exception as exc:
        raise JobResolutionError(_message(spec, exc)) from exc


def check_resolvable_sync(spec: JobSpec, resolve: Resolver, app: Any = None) -> None:
    def build() -> Any:
        resources = per_job_resources(app)
        _open(resources)
        try:
            return resolve()
        finally:
            _close_sync(resources)

    try:
        instance = contextvars.copy_context().run(build)
    except Exception as exc:
        raise JobResolutionError(_message(spec, exc)) from exc
    if inspect.isawaitable(instance):
        discard(instance)
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


def check_wiring(spec: JobSpec, app: Any) -> None:
    """Warn (``MonqueDIWarning``) about markers that cannot work as written: ``Provide[...]``
    on a method nobody wired, ``Closing[...]`` on a shared ``providers.Resource``."""
    for method_name in ("__init__", "handle"):
        method = spec.cls.__dict__.get(method_name)
        if method is None or not callable(method):
            continue
        markers = _markers(method)
        if not markers:
            continue
        where = f"job {spec.name!r}: {spec.cls.__qualname__}.{method_name}"
        if not _is_wired(method):
            warnings.warn(
                f"{where} takes Provide[...] arguments but is not wired, so it would get the "
                "markers themselves: decorate it with @inject and call "
                f"container.wire(modules=[{spec.cls.__module__!r}]) (or declare wiring_config "
                "on the container) before init_resources()",
                MonqueDIWarning,
                stacklevel=2,
            )
        for parameter, marker in markers:
            if type(marker).__name__ != "Closing":
                continue
            provider = _marker_provider(marker, app)
            if provider is not None and _closes_shared_resource(provider):
                warnings.warn(
                    f"{where}: Closing[...] on {parameter!r} closes a providers.Resource, one "
                    "instance shared by every job until shutdown: overlapping jobs share it and "
                    "the first to finish closes it under the others; declare it "
                    "providers.ContextLocalResource for one instance per job (monque_di "
                    "opens and closes those per execution)",
                    MonqueDIWarning,
                    stacklevel=2,
                )


def _markers(fn: Callable[..., Any]) -> list[tuple[str, Any]]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        (p.name, p.default)
        for p in parameters
        if getattr(p.default, "__IS_MARKER__", False) is True
    ]


def _is_wired(fn: Callable[..., Any]) -> bool:
    try:
        from dependency_injector.wiring import _patched_registry
    except ImportError:  # pragma: no cover - a future dependency-injector
        return True
    patched = getattr(_patched_registry, "get_callable", lambda fn: True)(fn)
    if patched is None:
        return False  # neither @inject nor wire() went over it
    if patched is True:  # pragma: no cover - a future dependency-injector
        return True
    return bool(getattr(patched, "injections", True))


def _marker_provider(marker: Any, app: Any) -> Any:
    inner = getattr(marker, "provider", None)  # Closing[Provide[x]]: the Provide marker
    target = getattr(inner, "provider", inner)
    if isinstance(target, providers.Provider):
        return target
    if isinstance(target, str) and app is not None:
        found: Any = app
        for part in target.split("."):
            found = getattr(found, part, None)
            if found is None:
                return None
        return found if isinstance(found, providers.Provider) else None
    return None


def _closes_shared_resource(provider: Any) -> bool:
    def shared(p: Any) -> bool:
        return isinstance(p, providers.Resource) and not (
            ContextLocalResource is not None and isinstance(p, ContextLocalResource)
        )

    try:
        return shared(provider) or any(shared(p) for p in provider.traverse())
    except Exception:  # pragma: no cover - introspection only
        return False
