"""The app's mongoengine documents."""

from __future__ import annotations

from mongoengine import Document, FloatField, StringField


class Invoice(Document):  # type: ignore[misc]  # mongoengine ships no types
    number = StringField(required=True, unique=True)
    amount = FloatField(required=True)
    rendered = StringField()
