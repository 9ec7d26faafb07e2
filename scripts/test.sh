#!/usr/bin/env bash
# The whole test suite with branch coverage, against $MONGODB_URI or the embedded server.
# Extra arguments go to pytest (e.g. scripts/test.sh -k unique -x).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

.venv/bin/python -m coverage erase
.venv/bin/python -m coverage run -m pytest "$@"
# A standalone mongod cannot exercise the change-stream paths: its CI job lowers the gate.
# 93: measured 93-94% after issues 12-14, whose new code is partly exercised only in child
# processes coverage does not follow (CLI and worker subprocesses, the Node side of the
# interop suite); the runtime's shutdown-race and last-resort paths are tested only in part.
.venv/bin/python -m coverage report --fail-under="${MONQUE_COVERAGE_MIN:-93}"
