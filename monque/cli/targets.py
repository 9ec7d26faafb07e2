"""Load what ``monque worker TARGET`` names: a Monque, a factory, or a DI container."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from monque.engine import Monque
from monque.errors import MonqueError

__all__ = ["load_target"]


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
    try:
        from dependency_injector import containers
    except ImportError:
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
