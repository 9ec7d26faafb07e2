#!/usr/bin/env bash
# The benchmark suite, against $MONGODB_URI or the embedded server (see benchmarks/README.md).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

exec .venv/bin/python -m benchmarks.run "$@"
