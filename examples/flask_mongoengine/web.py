"""The Flask app: it only enqueues (producer-only), with no event loop anywhere.

Start the web process with Flask's CLI, which finds ``create_app()`` in this module::

    MONGODB_URI=mongodb://localhost:27017 flask --app examples.flask_mongoengine.web run

or ``python -m examples.flask_mongoengine.web`` (the same on port 5000), or a WSGI server in
production: ``gunicorn 'examples.flask_mongoengine.web:create_app()'``. Jobs are processed by
the worker process (``python -m examples.flask_mongoengine.worker``).

Every answer is JSON, errors included: 400 for a malformed body, 404 for an unknown invoice,
409 for an invoice number that exists already.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from mongoengine import DoesNotExist, NotUniqueError
from werkzeug.exceptions import HTTPException

from monque import Monque

from .container import Container, create_container
from .models import Invoice

Answer = tuple[dict[str, Any], int]


class BadRequest(Exception):
    """A request body this API cannot use."""


def create_app(container: Container | None = None) -> Flask:
    container = container or create_container(producer_only=True)
    container.init_resources()
    monque: Monque = container.monque.engine()
    app = Flask(__name__)

    @app.post("/invoices")
    def create_invoice() -> Answer:
        number, amount = _invoice_fields(request.get_json(silent=True))
        # The unique index on Invoice.number decides duplicates (NotUniqueError: 409), even
        # between two requests at the same time; the job is enqueued only for a new invoice.
        invoice = Invoice(number=number, amount=amount).save()
        job = monque.enqueue_sync("render-invoice", {"number": invoice.number})
        return {"invoice": invoice.number, "job": str(job.id)}, 202

    @app.get("/invoices/<number>")
    def show_invoice(number: str) -> Answer:
        invoice = Invoice.objects.get(number=number)  # DoesNotExist: 404
        return {"number": invoice.number, "rendered": invoice.rendered}, 200

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest) -> Answer:
        return {"error": str(error)}, 400

    @app.errorhandler(DoesNotExist)
    def not_found(error: DoesNotExist) -> Answer:
        return {"error": "no such invoice"}, 404

    @app.errorhandler(NotUniqueError)
    def conflict(error: NotUniqueError) -> Answer:
        return {"error": "an invoice with this number exists already"}, 409

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Answer:  # 404 for unknown URLs, 405...
        return {"error": error.description or error.name}, error.code or 500

    return app


def _invoice_fields(body: object) -> tuple[str, float]:
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"number": "F-1", "amount": 12.5}')
    number, amount = body.get("number"), body.get("amount")
    if not isinstance(number, str) or not number.strip():
        raise BadRequest("number must be a non-empty string")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise BadRequest("amount must be a number")
    return number.strip(), float(amount)


if __name__ == "__main__":
    create_app().run(port=5000)
