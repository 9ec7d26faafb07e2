"""The Flask app: it only enqueues (producer-only), with no event loop anywhere."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from monque import Monque

from .container import Container, create_container
from .models import Invoice


def create_app(container: Container | None = None) -> Flask:
    container = container or create_container(producer_only=True)
    container.init_resources()
    monque: Monque = container.monque.engine()
    app = Flask(__name__)

    @app.post("/invoices")
    def create_invoice() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        invoice = Invoice(number=body["number"], amount=body["amount"]).save()
        job = monque.enqueue_sync("render-invoice", {"number": invoice.number})
        return {"invoice": invoice.number, "job": str(job.id)}, 202

    @app.get("/invoices/<number>")
    def show_invoice(number: str) -> dict[str, Any]:
        invoice = Invoice.objects.get(number=number)
        return {"number": invoice.number, "rendered": invoice.rendered}

    return app
