"""The worker process: ``python -m examples.flask_mongoengine.worker`` (SIGTERM stops it).

The web process's container (producer-only) serves here too: ``monque_di.run_worker`` makes
this process its worker, with the engine set up but started only here, and runs it until
SIGINT/SIGTERM, then stops gracefully and shuts the container's resources down.
"""

from __future__ import annotations

from monque import Monque
from monque_di import run_worker

from .container import create_container


def main() -> None:
    container = create_container(producer_only=True)

    def ready(monque: Monque) -> None:
        print("worker ready", flush=True)

    run_worker(container, on_ready=ready)


if __name__ == "__main__":
    main()
