"""`python manage.py reconcile_usage [--tenant slug] [--month YYYY-MM]`

Proves raw usage events = daily roll-ups = month counters = invoice totals for
every tenant (or one) and month (default: this month). Exits 1 with a line per
difference otherwise, so it can run in CI and from cron.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from billing.accounting import month_start
from billing.reconcile import reconcile
from tenants.context import all_tenants, tenant_context
from tenants.models import Tenant


def _month(value: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise CommandError(f"--month must look like 2026-11, got {value!r}") from None


class Command(BaseCommand):
    help = "Check that raw usage events, daily roll-ups, month counters and invoices agree; exit 1 if not."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Tenant slug (default: every tenant).")
        parser.add_argument("--month", help="YYYY-MM (default: the current month, UTC).")

    def handle(self, *args, tenant=None, month=None, **options):
        period = _month(month) if month else month_start()
        with all_tenants("reconcile_usage: list the tenants to check"):
            tenants = Tenant.objects.order_by("slug")
            if tenant:
                tenants = tenants.filter(slug=tenant)
            tenants = list(tenants)
        if tenant and not tenants:
            raise CommandError(f"No tenant with slug {tenant!r}.")
        failures = []
        for each in tenants:
            with tenant_context(each):
                report = reconcile(each, period)
            if report.ok:
                self.stdout.write(
                    f"ok   {each.slug} {period:%Y-%m}: {report.events} events = {report.rollup_rows} roll-up rows"
                )
            else:
                failures.extend(report.differences)
                for line in report.differences:
                    self.stderr.write(f"DIFF {line}")
        if failures:
            raise CommandError(f"{len(failures)} difference(s): raw events, roll-ups and invoices do not agree.")
        self.stdout.write(self.style.SUCCESS(f"Reconciled {len(tenants)} tenant(s) for {period:%Y-%m}."))
