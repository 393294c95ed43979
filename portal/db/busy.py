"""The database too busy to take a write in time: 503 and "try again", never a 500.

On SQLite (the embedded default) one connection writes at a time. Every write of the
portal is a BEGIN IMMEDIATE transaction (settings: transaction_mode) or a statement of
its own, and waits for the writer before it for up to the connection's busy timeout
(settings: 20 s); the statements of portal.db.sql run on that same connection, so they
wait alike. Ordinary concurrent use (a message posted while its conversation is deleted,
the worker finishing a turn, a stream being read) therefore never fails with "database
is locked" (tests/agents/test_conversation_race.py). Only a writer that holds the
database for longer than the timeout can make one: a long maintenance command, a backup
or migration, someone's `sqlite3` shell left in a transaction. That is the server's
passing state, not the request's fault: the API answers 503 with Retry-After (problem
JSON), a page says so and links back to where the person came from.
"""

from __future__ import annotations

import logging

from django.db import OperationalError
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

log = logging.getLogger(__name__)

# SQLite's SQLITE_BUSY ("database is locked") and SQLITE_LOCKED ("database table is locked").
_BUSY_MESSAGES = ("database is locked", "database table is locked")
RETRY_AFTER_SECONDS = 5
TITLE = "Service unavailable"
DETAIL = "The database was too busy to take this request in time. Try again in a moment."
MESSAGE = "The portal was too busy to finish that just now. Please try again in a moment."


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(text in str(exc) for text in _BUSY_MESSAGES)


def problem_response():
    """The API's answer (a DRF Response: rest_framework's exception handler returns it)."""
    from rest_framework.response import Response

    from portal.api import PROBLEM_CONTENT_TYPE, problem

    return Response(
        problem(503, TITLE, DETAIL),
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        content_type=PROBLEM_CONTENT_TYPE,
    )


def response_for(request):
    """The answer to a request that met a busy database: problem JSON for the API, the
    reason in place for htmx, else a page saying so with the way back. (Not a flash
    message and a redirect: messages live in the session, a row that cannot be written
    either until the database is free.)"""
    log.warning("database busy: %s %s answered 503", request.method, request.path)
    from portal.api import problem_response as json_problem
    from portal.views import wants_json

    if wants_json(request):
        response = json_problem(503, TITLE, DETAIL)
    elif request.headers.get("HX-Request"):
        # Shown where the request's refusals are (static/js/chat.js swaps 503 in too).
        response = render(request, "includes/busy_alert.html", {"detail": MESSAGE}, status=503)
    else:
        back = request.headers.get("Referer", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = "/"
        response = render(request, "503.html", {"detail": MESSAGE, "back": back}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseBusyMiddleware:
    """A view that met a busy database. (A middleware that writes, such as allauth's
    session tracking, is answered by portal.views.error_500 through response_for too;
    this one also works with DEBUG on, where Django shows its debug page instead.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return response_for(request) if is_busy(exception) else None
