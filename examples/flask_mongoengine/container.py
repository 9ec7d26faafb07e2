"""One container for the web process (producer-only) and the worker process."""

from __future__ import annotations

import os

import mongoengine
from dependency_injector import containers, providers

from monque_di import SyncMonqueContainer

from . import jobs


class Container(containers.DeclarativeContainer):
    __self__ = providers.Self()
    config = providers.Configuration()

    renderer = providers.Singleton(jobs.InvoiceRenderer)
    render_invoice = providers.Factory(jobs.RenderInvoice, renderer=renderer)

    monque = providers.Container(
        SyncMonqueContainer,
        connection=config.mongo.alias,  # a mongoengine connection alias
        config=config.monque,
        jobs=providers.Object([jobs]),
        app=__self__,
    )


def create_container(
    *, producer_only: bool, uri: str | None = None, db: str | None = None
) -> Container:
    """The container, on $MONGODB_URI (default localhost) and $MONGODB_DB (``flask_example``)."""
    uri = uri or os.environ.get("MONGODB_URI", "mongodb://localhost:27017")
    db = db or os.environ.get("MONGODB_DB", "flask_example")
    mongoengine.connect(db=db, host=uri, uuidRepresentation="standard")
    container = Container()
    container.config.from_dict(
        {
            "mongo": {"alias": "default"},
            "monque": {"producer_only": producer_only, "poll_interval": 0.2},
        }
    )
    return container
