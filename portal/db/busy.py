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


# Redis (REDIS_URL: the cache holding the guardrail policy, the rate limiter) unreachable or
# refusing writes (is_redis_down).
# The portal fails closed: a message is not admitted unchecked against its tenant's limits
# and policy, and nothing of it is saved; the person is told to try again, as for a busy
# database. (Without REDIS_URL neither is in Redis.)
REDIS_DETAIL = "A service the portal needs is unavailable, so nothing was saved. Try again in a moment."
REDIS_MESSAGE = "A service the portal needs is unavailable just now, so nothing was saved. Please try again soon."
# The page's heading and tab title: a busy database is the portal being busy; Redis down is
# not (nobody is asking too much), but a passing problem of the service's own.
HEADING, PAGE_TITLE = "The portal is busy", "Busy"
REDIS_HEADING, REDIS_PAGE_TITLE = "A temporary problem on our side", "Temporary problem"


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(text in str(exc) for text in _BUSY_MESSAGES)


def is_redis_down(exc: BaseException) -> bool:
    """Redis cannot serve the portal now: it refused, dropped or timed out a connection
    (redis-py's ConnectionError, TimeoutError; LOADING after a restart is a ConnectionError),
    or it answers but refuses to write: a replica after a failover demoted the server the
    portal points at (READONLY), a primary that lost its replicas' quorum (MASTERDOWN), a
    server at its memory limit with nothing to evict (OOM), a cluster moving a slot
    (TRYAGAIN). Each passes without anything the request could do differently. Django's
    Redis cache and billing.limits both raise them unwrapped."""
    try:
        from redis import exceptions
    except ImportError:  # pragma: no cover (redis is a dependency)
        return False
    return isinstance(
        exc,
        (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            exceptions.ReadOnlyError,
            exceptions.MasterDownError,
            exceptions.OutOfMemoryError,
            exceptions.TryAgainError,
        ),
    )


def is_unavailable(exc: BaseException | None) -> bool:
    """A passing outage of the server's own (busy database, Redis down): 503, "try again"."""
    return exc is not None and (is_busy(exc) or is_redis_down(exc))


def _texts(exc: BaseException | None) -> tuple[str, str]:
    """(the API's detail, the page's message) for this outage."""
    if exc is not None and is_redis_down(exc):
        return REDIS_DETAIL, REDIS_MESSAGE
    return DETAIL, MESSAGE


def problem_response(exc: BaseException | None = None):
    """The API's answer (a DRF Response: rest_framework's exception handler returns it)."""
    from rest_framework.response import Response

    from portal.api import PROBLEM_CONTENT_TYPE, problem

    response = Response(
        problem(503, TITLE, _texts(exc)[0]),
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        content_type=PROBLEM_CONTENT_TYPE,
    )
    return _logged(response)


def _logged(response):
    """The caller logged the outage once, as a warning: Django's request logger need not log
    the 503 again as an error (django.utils.log.log_response honours this mark)."""
    response._has_been_logged = True
    return response


def response_for(request, exc: BaseException | None = None):
    """The answer to a request that met a busy database (or Redis down): problem JSON for
    the API, the reason in place for htmx, else a page saying so with the way back. (Not a
    flash message and a redirect: messages live in the session, a row that cannot be
    written either until the database is free.)"""
    detail, message = _texts(exc)
    if exc is not None and is_redis_down(exc):
        log.warning("redis unreachable: %s %s answered 503: %s", request.method, request.path, exc)
    else:
        log.warning("database busy: %s %s answered 503", request.method, request.path)
    from portal.api import problem_response as json_problem
    from portal.views import wants_json

    if wants_json(request):
        response = json_problem(503, TITLE, detail)
    elif request.headers.get("HX-Request"):
        # Shown where the request's refusals are (static/js/chat.js swaps 503 in too).
        response = render(request, "includes/busy_alert.html", {"detail": message}, status=503)
    else:
        back = request.headers.get("Referer", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = "/"
        heading, title = (REDIS_HEADING, REDIS_PAGE_TITLE) if is_redis_down(exc) else (HEADING, PAGE_TITLE)
        context = {"detail": message, "back": back, "heading": heading, "title": title}
        response = render(request, "503.html", context, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return _logged(response)


class DatabaseBusyMiddleware:
    """A view that met a busy database. (A middleware that writes, such as allauth's
    session tracking, is answered by portal.views.error_500 through response_for too;
    this one also works with DEBUG on, where Django shows its debug page instead.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return response_for(request, exception) if is_unavailable(exception) else None
