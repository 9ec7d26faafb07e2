"""Test helpers: a real MongoDB for each test, and fault injection.

Installed as a pytest plugin (``monque.testing.plugin``): with ``MONGODB_URI`` set the fixtures
use that server, otherwise they start the embedded SecantusDB server once per session
(``pip install 'monque-py[embedded,testing]'``; the async fixtures need pytest-asyncio, which
the ``testing`` extra brings).
"""

from monque.testing.drain import drain, drain_sync
from monque.testing.failpoints import fail_command
from monque.testing.server import EmbeddedMongo, free_port

__all__ = ["EmbeddedMongo", "drain", "drain_sync", "fail_command", "free_port"]
