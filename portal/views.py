"""Home, health checks, and error pages that speak JSON under /api/."""

from __future__ import annotations

import logging
import sys

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from portal.api import problem_response
from tenants.views import my_tenants

log = logging.getLogger(__name__)


@login_required
def home(request):
    memberships = my_tenants(request.user)
    if len(memberships) == 1 and not request.user.is_staff:
        # Suspended or not: a suspended tenant's address answers with its suspended
        # page (name, reason, whom to contact), and the same address works again
        # once it is reactivated.
        return redirect("tenants:overview", tenant_slug=memberships[0].tenant.slug)
    return render(request, "portal/home.html", {"memberships": memberships})


@never_cache
def healthz(request):
    """The process is alive. Touches nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"
        log.warning("readyz: database unreachable: %s", exc)
        return f"database: {exc.__class__.__name__}"
    return None


def _check_broker() -> str | None:
    from portal.celery import app, ensure_broker_folders

    try:
        ensure_broker_folders()
        with app.connection_for_write() as conn:
            # No retry: a readiness probe must answer within its own (often 1 s) timeout.
            conn.ensure_connection(max_retries=0, timeout=0.8)
    except Exception as exc:  # kombu raises many types
        log.warning("readyz: broker unreachable: %s", exc)
        return f"broker: {exc.__class__.__name__}"
    return None


@never_cache
def readyz(request):
    """Ready to serve: the database and the Celery broker answer. 503 otherwise."""
    problems = [p for p in (_check_database(), _check_broker()) if p]
    status = 503 if problems else 200
    return JsonResponse({"status": "unavailable" if problems else "ok", "problems": problems}, status=status)


def wants_json(request) -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/oauth/")


def error_404(request, exception=None):
    if wants_json(request):
        return problem_response(404, "Not found", "Nothing here, or nothing you may see.")
    return render(request, "404.html", status=404)


def error_403(request, exception=None):
    detail = str(exception) if exception and str(exception) else "You do not have permission to do this."
    if wants_json(request):
        return problem_response(403, "Forbidden", detail)
    return render(request, "403.html", {"detail": detail}, status=403)


def error_400(request, exception=None):
    if wants_json(request):
        return problem_response(400, "Bad request", "The request could not be understood.")
    return render(request, "400.html", status=400)


def error_500(request):
    # Called while Django handles the exception (sys.exc_info() is it): a database held
    # past its busy timeout is answered 503 / "try again", wherever the request met it.
    from portal.db import busy

    if busy.is_unavailable(sys.exc_info()[1]):  # or Redis down
        return busy.response_for(request, sys.exc_info()[1])
    if wants_json(request):
        return problem_response(500, "Server error", "Something went wrong on our side; it has been logged.")
    return render(request, "500.html", status=500)
