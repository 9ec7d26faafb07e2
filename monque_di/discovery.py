"""Explicit discovery: ``@Job`` classes from the modules and packages the app lists."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType

from monque_di.decorators import JobSpec, job_spec
from monque_di.errors import JobDefinitionError

__all__ = ["discover_jobs"]


def discover_jobs(sources: Iterable[object]) -> list[JobSpec]:
    """Collect job specs from modules, packages (recursively), dotted names, or classes.

    The order is the order of ``sources`` then of definition; a name used twice is an error.
    """
    specs: dict[str, JobSpec] = {}
    for spec in _walk(sources):
        existing = specs.get(spec.name)
        if existing is not None and existing.cls is not spec.cls:
            raise JobDefinitionError(
                f"job name {spec.name!r} is declared twice: by "
                f"{_where(existing.cls)} and by {_where(spec.cls)}"
            )
        specs[spec.name] = spec
    return list(specs.values())


def _walk(sources: Iterable[object]) -> Iterable[JobSpec]:
    for source in sources:
        if isinstance(source, str):
            source = importlib.import_module(source)
        if isinstance(source, ModuleType):
            yield from _module_specs(source)
            if hasattr(source, "__path__"):
                for info in pkgutil.walk_packages(source.__path__, f"{source.__name__}."):
                    yield from _module_specs(importlib.import_module(info.name))
            continue
        spec = job_spec(source)
        if spec is None:
            raise JobDefinitionError(
                f"jobs lists modules, packages, dotted names or @Job classes; got {source!r}"
            )
        yield spec


def _module_specs(module: ModuleType) -> Iterable[JobSpec]:
    for value in vars(module).values():
        spec = job_spec(value)
        # Only classes defined here: an import of a job class elsewhere is not a second job.
        if spec is not None and spec.cls.__module__ == module.__name__:
            yield spec


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
