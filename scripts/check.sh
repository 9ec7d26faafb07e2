#!/usr/bin/env bash
# Lint, format and type checks (what CI runs besides the tests).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
