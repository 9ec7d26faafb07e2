"""dependency-injector integration: ``MonqueContainer`` and ``@Job`` handler classes.

Needs ``pip install monque-py[di]``.
"""

from monque_di.containers import MonqueContainer, SyncMonqueContainer
from monque_di.decorators import Job, JobSpec
from monque_di.discovery import discover_jobs
from monque_di.errors import JobDefinitionError, JobResolutionError
from monque_di.lifecycle import options_from_config

__all__ = [
    "Job",
    "JobDefinitionError",
    "JobResolutionError",
    "JobSpec",
    "MonqueContainer",
    "SyncMonqueContainer",
    "discover_jobs",
    "options_from_config",
]
