# Sourced by the other scripts: make sure uv and the project's .venv exist and match uv.lock.
# Needs only Python 3.10+ on PATH; no Docker, no MongoDB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"

if ! command -v uv >/dev/null 2>&1; then
    if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
        echo "bootstrap: installing uv with pip" >&2
        "$PYTHON" -m pip install --quiet --user uv 2>/dev/null || "$PYTHON" -m pip install --quiet uv
    fi
    uv() { "$PYTHON" -m uv "$@"; }
fi

uv sync --quiet --locked --all-extras --python "$PYTHON"
