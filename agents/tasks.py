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

from celery.exceptions import SoftTimeLimitExceeded

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
        return turns.run(tenant, invocation_id, final_attempt=self.request.retries >= MAX_RETRIES)
    except turns.RetryLater as exc:
        # Exponential backoff with jitter: 1 s, 2 s, 4 s (capped), then the turn fails for good.
        countdown = min(2**self.request.retries, 30)
        log.warning("turn %s: transient runtime error, retry in %ss: %s", invocation_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown)
    except SoftTimeLimitExceeded:
        turns.fail(invocation_id, "The agent took too long to answer.")
        return "failed"
    except Exception:
        # A bug or an unexpected error: fail the turn, or it would stay "running" with
        # no worker behind it, and the conversation would refuse every new message.
        log.exception("turn %s failed unexpectedly", invocation_id)
        turns.fail(invocation_id, "Something went wrong while answering. Try again.")
        return "failed"
