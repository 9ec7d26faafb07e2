#!/usr/bin/env bash
# The quickstart demo, against $MONGODB_URI or the embedded server.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

exec .venv/bin/python examples/quickstart.py "$@"
