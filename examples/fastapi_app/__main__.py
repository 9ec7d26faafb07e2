"""Serve the example: ``python -m examples.fastapi_app`` (embedded server if no MONGODB_URI)."""

from __future__ import annotations

import os
from contextlib import ExitStack

import uvicorn

from monque.testing import EmbeddedMongo

from .app import create_app, create_container

if __name__ == "__main__":
    with ExitStack() as stack:
        uri = os.environ.get("MONGODB_URI") or stack.enter_context(EmbeddedMongo()).uri
        uvicorn.run(create_app(create_container(uri)), port=8000)
