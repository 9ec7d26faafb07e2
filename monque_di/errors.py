"""Errors and warnings of the dependency-injector integration."""

from __future__ import annotations

from monque.errors import MonqueError

__all__ = ["ContainerError", "JobDefinitionError", "JobResolutionError", "MonqueDIWarning"]


class JobDefinitionError(MonqueError):
    """An ``@Job`` class is malformed: no ``handle``, a duplicate name, a bad option."""


class JobResolutionError(MonqueError):
    """An ``@Job`` class cannot be built from the container (a dependency is missing)."""


class ContainerError(MonqueError):
    """The app container cannot provide what the engine needs (an undefined configuration
    option, a ``Dependency`` nobody provided, no nested ``MonqueContainer``...), in one line."""


class MonqueDIWarning(UserWarning):
    """A container set-up that works, but not the way it looks: a ``Closing[...]`` marker on a
    shared ``providers.Resource``, ``Provide[...]`` markers on a handler nobody wired."""
