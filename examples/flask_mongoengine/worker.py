"""The worker process: ``python -m examples.flask_mongoengine.worker`` (SIGTERM stops it)."""

from __future__ import annotations

from monque import Monque

from .container import create_container


def main() -> None:
    container = create_container(producer_only=True)  # set-up only; run_sync() processes
    container.init_resources()
    monque: Monque = container.monque.engine()
    print("worker ready", flush=True)
    monque.run_sync()  # until SIGINT/SIGTERM, then a graceful stop
    container.shutdown_resources()


if __name__ == "__main__":
    main()
