"""A real Celery worker consumes from the configured broker (filesystem by
default, Redis when REDIS_URL is set) and runs a task in its tenant's context."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core import mail
from django.db import connection, connections

from portal.celery import app
from tenants import services
from tenants.models import Invitation
from tests import factories


@pytest.fixture
def worker(transactional_db):
    # Earlier tests publish invitation emails nobody consumes; ids are reused after
    # a flush, so a stale message could send a second email. Start from an empty queue.
    app.control.purge()
    # The solo pool sends worker_process_init in this process, and Celery's Django fixup
    # answers it as a forked child would: it closes the socket of every open database
    # connection with os.close, behind psycopg's back. A connection this thread still
    # holds (the previous test's, or this test's) then goes back to PostgreSQL's pool
    # looking healthy, its descriptor soon reused by another socket, and the worker that
    # takes it waits forever for an answer. Closed first, there is nothing to close.
    connections.close_all()
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def _wait_for(predicate, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def test_thread_holds_a_database_connection(transactional_db):
    # As after a test that used the database without closing its connection (any `db` test).
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_it_delivers_an_invitation_email_through_the_broker_and_a_worker(
    test_thread_holds_a_database_connection, worker, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    world = factories.World.build()
    actor = services.Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    from tenants.context import tenant_context

    with tenant_context(world.a.tenant):
        invitation = services.invite_member(actor, email="via-worker@alpha.test", role="member")
    sent = lambda: [m for m in mail.outbox if m.to == ["via-worker@alpha.test"]]  # noqa: E731
    assert _wait_for(lambda: len(sent()) == 1), "the worker did not send the invitation email"
    message = sent()[0]
    assert message.to == ["via-worker@alpha.test"]
    assert f"/invitations/{invitation.token}/" in message.body

    def recorded_as_sent():
        # The task sends the email first and records the sending after it: wait for both.
        with tenant_context(world.a.tenant):
            return Invitation.objects.get(pk=invitation.pk).last_sent_at is not None

    assert _wait_for(recorded_as_sent), "the worker sent the email but did not record it as sent"
