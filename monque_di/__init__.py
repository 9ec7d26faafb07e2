"""dependency-injector integration: ``MonqueContainer`` and ``@Job`` handler classes.

Needs the ``di`` extra: ``pip install 'monque-py[di]'``.

- ``MonqueContainer`` / ``SyncMonqueContainer``: the engine as a resource an app container
  nests (see ``monque_di.containers``; config keys in ``monque_di.lifecycle``).
- ``@Job(name=..., ...)``: a handler class resolved from the container for every execution.
  Constructor injection through the class's provider needs nothing else; ``Provide[...]``
  markers need ``@inject`` on the method and ``container.wire(modules=[...])`` (or
  ``wiring_config``) before ``init_resources()``.
- Per-job resources: declare them ``providers.ContextLocalResource``; each job gets its own,
  closed when the job ends (see ``monque_di.resolution``).
- ``run_worker(container, only=..., concurrency=...)`` / ``configure_workers``: a worker
  process from a container (see ``monque_di.runner``).
"""

try:
    import dependency_injector  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install (tested in a subprocess)
    raise ImportError(
        "monque_di needs dependency-injector: pip install 'monque-py[di]'",
        name=exc.name,
    ) from exc

from monque_di.containers import MonqueContainer, SyncMonqueContainer
from monque_di.decorators import Job, JobSpec
from monque_di.discovery import discover_jobs
from monque_di.errors import (
    ContainerError,
    JobDefinitionError,
    JobResolutionError,
    MonqueDIWarning,
)
from monque_di.lifecycle import WorkerSettings, options_from_config
from monque_di.runner import configure_workers, find_monque_container, run_worker

__all__ = [
    "ContainerError",
    "Job",
    "JobDefinitionError",
    "JobResolutionError",
    "JobSpec",
    "MonqueContainer",
    "MonqueDIWarning",
    "SyncMonqueContainer",
    "WorkerSettings",
    "configure_workers",
    "discover_jobs",
    "find_monque_container",
    "options_from_config",
    "run_worker",
]
