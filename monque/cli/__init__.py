"""The ``monque`` command: run workers, inspect and manage jobs (``pip install monque-py[cli]``)."""

from __future__ import annotations

import sys

__all__ = ["cli", "main"]

try:
    import click  # noqa: F401
    import rich  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install

    def main() -> None:
        sys.stderr.write("monque: the CLI needs its extra: pip install 'monque-py[cli]'\n")
        sys.exit(1)

else:
    from monque.cli.app import cli
    from monque.cli.app import main as _main

    def main() -> None:
        _main()
