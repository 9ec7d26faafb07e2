"""Sync job handlers: plain ``def``, run on the worker's thread pool."""

from __future__ import annotations

from typing import Any

from monque import Job as JobModel
from monque_di import Job

from .models import Invoice


class InvoiceRenderer:
    def render(self, invoice: Invoice) -> str:
        return f"INVOICE {invoice.number}: {invoice.amount:.2f} EUR"


@Job(name="render-invoice")
class RenderInvoice:
    def __init__(self, renderer: InvoiceRenderer) -> None:
        self.renderer = renderer

    def handle(self, job: JobModel[dict[str, Any]]) -> None:
        invoice = Invoice.objects.get(number=job.data["number"])
        invoice.rendered = self.renderer.render(invoice)
        invoice.save()
