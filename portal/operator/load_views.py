"""Operator console, load: which tenants use the shared capacity (noisy neighbours).

Staff only (operator_view: non-staff get 404). The numbers come from billing.load.
"""

from __future__ import annotations

from django.shortcuts import render

from agents import queues
from billing import load
from portal.celery import app as celery_app
from portal.operator.views import audited_read, operator_view
from tenants.models import Tenant


@operator_view
def load_overview(request):
    key = request.GET.get("window", load.DEFAULT_WINDOW)
    error = ""
    if key not in load.WINDOWS:
        error = f"Unknown window; choose one of: {', '.join(load.WINDOWS.values())}."
        key = load.DEFAULT_WINDOW
    window = load.load_window(key)
    tenants = (
        Tenant.objects.select_related("tier")
        .only(
            "pk",
            "slug",
            "name",
            "status",
            "deployment_model",
            "tier__name",
            "tier__requests_per_minute",
            "tier__tokens_per_minute",
            "tier__concurrent_sessions",
        )
        .order_by("name")
    )
    context = {
        "load": load.tenant_load(window, tenants),
        "window": window,
        "windows": list(load.WINDOWS.items()),
        "error": error,
    }
    response = render(request, "operator/load.html", context, status=400 if error else 200)
    return audited_read(request, response, "load")


@operator_view
def load_queues(request):
    """The Load page's "Queues and workers" panel, fetched once the page has rendered: asking
    the workers which queues they read waits up to agents.queues.CONSUMER_PROBE_SECONDS."""
    consumers = queues.queue_consumers()
    rows = queues.queue_rows(consumers)
    context = {
        "queues": rows,
        "shared_workers": queues.workers_reading_several(rows),
        "known": consumers is not None,
        "filesystem": str(celery_app.conf.broker_url or "").startswith("filesystem://"),
    }
    response = render(request, "operator/_load_queues.html", context)
    return audited_read(request, response, "load")
