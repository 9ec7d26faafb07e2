"""Errors of the dependency-injector integration."""

from __future__ import annotations

from monque.errors import MonqueError

__all__ = ["JobDefinitionError", "JobResolutionError"]


class JobDefinitionError(MonqueError):
    """An ``@Job`` class is malformed: no ``handle``, a duplicate name, a bad option."""


class JobResolutionError(MonqueError):
    """An ``@Job`` class cannot be built from the container (a dependency is missing)."""
