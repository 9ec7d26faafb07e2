"""The docs name what the code has."""

from __future__ import annotations

from pathlib import Path

from monque import Events

ROOT = Path(__file__).resolve().parent.parent


def test_every_event_is_documented() -> None:
    text = (ROOT / "docs" / "events.md").read_text()
    names = {v for k, v in vars(Events).items() if k.isupper() and isinstance(v, str)}
    assert len(names) >= 18
    missing = [n for n in sorted(names) if f"`{n}`" not in text]
    assert not missing, f"docs/events.md does not document {missing}"
