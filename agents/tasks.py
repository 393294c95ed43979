"""Celery tasks of the agent platform: running a chat turn.

`run_turn` is idempotent: it claims the invocation with a conditional update
and returns quietly if the turn is already finished or is being run by another
worker; it is acks_late and rejected on worker loss (so a killed worker's turn
is redelivered), retried with backoff on transient runtime errors, and
time-limited. The final state, the stored answer and the usage event are
written in one transaction.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from agents import turns
from tenants.models import Tenant
from tenants.tasks import tenant_task

log = logging.getLogger(__name__)

TURN_SOFT_TIME_LIMIT = 120
TURN_TIME_LIMIT = 150
MAX_RETRIES = 3


@tenant_task(
    bind=True,
    soft_time_limit=TURN_SOFT_TIME_LIMIT,
    time_limit=TURN_TIME_LIMIT,
    max_retries=MAX_RETRIES,
)
def run_turn(self, tenant: Tenant, invocation_id: str) -> str:
    try:
        return turns.run(
            tenant,
            invocation_id,
            final_attempt=self.request.retries >= MAX_RETRIES,
            redelivered=bool((self.request.delivery_info or {}).get("redelivered")),
        )
    except turns.RetryLater as exc:
        # Exponential backoff with jitter: 1 s, 2 s, 4 s (capped), then the turn fails for good.
        countdown = min(2**self.request.retries, 30)
        log.warning("turn %s: transient runtime error, retry in %ss: %s", invocation_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown)
    # The last resort: turns.run itself fails (and bills, for what the runtime reported) a
    # turn interrupted once the runtime may have been called, in the final guardrail check
    # and the finish too; these catch what is raised before that (the claim and the stream's
    # first event: nothing used, nothing to bill) or by run()'s own failure handling. A turn
    # ended already is left as it is (turns._finish's conditional update).
    except SoftTimeLimitExceeded:
        turns.fail(invocation_id, turns.TOOK_TOO_LONG)
        return "failed"
    except Exception:
        # A bug or an unexpected error: fail the turn, or it would stay "running" with
        # no worker behind it, and the conversation would refuse every new message.
        log.exception("turn %s failed unexpectedly", invocation_id)
        turns.fail(invocation_id, turns.WENT_WRONG)
        return "failed"


# A running turn cannot legitimately outlive the hard time limit; past it plus this grace
# its worker is gone (killed, or the database was down when it tried to record the failure).
STUCK_GRACE_SECONDS = 60


@shared_task(name="agents.tasks.fail_stuck_turns")
def fail_stuck_turns() -> int:
    """Fail turns that no worker will finish, so no conversation waits for ever.

    A turn stays running if its worker died and the broker has not redelivered it
    (Redis redelivers an unacknowledged task only after its visibility timeout, an
    hour by default), or if the worker could not even record the failure; a queued
    turn whose task was lost never starts. Both block the conversation ("wait for
    the current answer"). Run by Celery beat; each failure goes through turns.fail,
    whose conditional update loses to a worker that finishes at the same moment, and
    writes the turn's one usage event like any other failure."""
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    from agents.models import Invocation, MessageStatus
    from tenants.context import all_tenants, tenant_context
    from tenants.models import Tenant

    now = timezone.now()
    running_before = now - timedelta(seconds=TURN_TIME_LIMIT + STUCK_GRACE_SECONDS)
    queued_before = now - timedelta(seconds=settings.TURN_QUEUED_MAX_SECONDS)
    with all_tenants("fail turns no worker will finish"):
        stuck = list(
            Invocation.unscoped.filter(
                status__in=[MessageStatus.RUNNING, MessageStatus.STREAMING], started_at__lt=running_before
            ).values_list("tenant_id", "pk", "status")
        ) + list(
            # A turn put back to the queue for its retry (turns.RetryLater) keeps its
            # queued_at (when the person asked: latency, order, the trace's queue wait);
            # it waits from its last attempt's start, so that is what is measured then.
            Invocation.unscoped.filter(status=MessageStatus.QUEUED, queued_at__lt=queued_before)
            .filter(Q(started_at__isnull=True) | Q(started_at__lt=queued_before))
            .values_list("tenant_id", "pk", "status")
        )
        tenants = Tenant.objects.select_related("tier").in_bulk({tenant_id for tenant_id, _, _ in stuck})
    for tenant_id, invocation_id, status in stuck:
        reason = (
            "This answer waited too long in the queue. Try again."
            if status == MessageStatus.QUEUED
            else "The agent stopped answering. Try again."
        )
        with tenant_context(tenants[tenant_id]):
            turns.fail(invocation_id, reason)
        log.warning("turn %s was %s with no worker behind it: failed", invocation_id, status)
    return len(stuck)


# "New conversation" saves one at once (its runtime session id; the API answers with it),
# and one left before its first message is hidden from every list
# (services.listed_conversations) but would otherwise stay for ever.
ABANDONED_CONVERSATION_DAYS = 1


@shared_task(name="agents.tasks.delete_abandoned_conversations")
def delete_abandoned_conversations() -> int:
    """Delete conversations started ABANDONED_CONVERSATION_DAYS ago or more in which nobody
    wrote nor named anything. Run by Celery beat; the number deleted."""
    from datetime import timedelta

    from django.db.models import Exists, OuterRef
    from django.utils import timezone

    from agents.models import Conversation, Invocation, Message
    from tenants.context import all_tenants

    started_before = timezone.now() - timedelta(days=ABANDONED_CONVERSATION_DAYS)
    with all_tenants("delete conversations nobody wrote in"):
        abandoned = (
            Conversation.unscoped.filter(created_at__lt=started_before, title="")
            .exclude(Exists(Message.unscoped.filter(conversation=OuterRef("pk"))))
            .exclude(Exists(Invocation.unscoped.filter(conversation=OuterRef("pk"))))
        )
        _, deleted_by_model = abandoned.delete()
    deleted = deleted_by_model.get(Conversation._meta.label, 0)
    if deleted:
        log.info("deleted %s conversations nobody wrote in", deleted)
    return deleted
