"""Scheduled billing work: drafting the monthly invoices.

`draft_monthly_invoices` runs from Celery beat (CELERY_BEAT_SCHEDULE in
portal/settings.py; `make run` starts beat inside its worker). It fans out one
`draft_tenant_invoice` per tenant that owes the month (every active tenant, and a
suspended one for a month it used or was already invoiced for: billing.invoices.
billable_tenant_ids), each in its tenant's context
(`@tenant_task`), for the current month (a running draft that follows usage) and
the previous month (so the month that just ended is drafted with its last
day's usage; it stays a draft until an operator finalises it). Drafting is
idempotent and never touches a final invoice, so the schedule can run as often
as it likes and a redelivered task changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.utils import timezone

from billing.accounting import month_start
from tenants.tasks import tenant_task

log = logging.getLogger(__name__)


@tenant_task()
def draft_tenant_invoice(tenant, period_iso: str) -> int:
    from billing.invoices import draft_invoice

    invoice = draft_invoice(tenant, dt.date.fromisoformat(period_iso))
    return invoice.pk


@shared_task(name="billing.tasks.draft_monthly_invoices", acks_late=True, reject_on_worker_lost=True)
def draft_monthly_invoices(today_iso: str | None = None) -> int:
    """Enqueue a draft of this month and last month for every tenant that owes it; returns how many tasks."""
    from billing.invoices import billable_tenant_ids

    today = dt.date.fromisoformat(today_iso) if today_iso else timezone.now().astimezone(dt.UTC).date()
    this_month = month_start(today)
    last_month = month_start(this_month - dt.timedelta(days=1))
    sent = 0
    for period in (last_month, this_month):
        for tenant_id in billable_tenant_ids(period):
            draft_tenant_invoice.delay(tenant_id, period.isoformat())
            sent += 1
    log.info("invoice drafting: %s tasks for %s and %s", sent, last_month, this_month)
    return sent
