"""reconcile_usage: raw events = roll-ups = month counters = invoices, or exit 1 with the diff."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

from billing.accounting import month_start
from billing.models import Invoice, InvoiceLine, InvoiceLineKind, MonthlyUsage, UsageDaily
from tenants.context import tenant_context
from tests.billing.helpers import ask_and_run

pytestmark = pytest.mark.django_db


def reconcile(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("reconcile_usage", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def failing(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="difference"):
        call_command("reconcile_usage", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def usage(world, catalogue, runtime):
    from billing import limits

    ask_and_run(world.a, catalogue.helpdesk)
    ask_and_run(world.a, catalogue.helpdesk, role="admin")
    ask_and_run(world.b, catalogue.helpdesk)
    tier = world.a.tenant.tier
    tier.requests_per_minute = 1
    tier.save()
    with pytest.raises(limits.LimitExceeded):  # a throttle event, counted in the roll-ups too
        ask_and_run(world.a, catalogue.helpdesk)
    return world


def test_it_passes_when_everything_agrees(usage):
    out, err = reconcile()
    assert "ok   alpha" in out and "ok   bravo" in out
    assert f"alpha {month_start():%Y-%m}: 2 events" in out  # the throttle is no turn
    assert "Reconciled 2 tenant(s)" in out and err == ""


def test_it_fails_with_the_diff_when_a_rollup_disagrees(usage):
    with tenant_context(usage.a.tenant):
        UsageDaily.objects.filter(user_key=usage.a.member.pk, turns=1).update(input_tokens=F("input_tokens") + 5)
    _, err = failing("--tenant", "alpha")
    assert "input_tokens raw events 1200 != roll-up 1205" in err
    reconcile("--tenant", "bravo")  # the other tenant is still fine


def test_it_fails_when_the_month_counter_disagrees(usage):
    with tenant_context(usage.a.tenant):
        MonthlyUsage.objects.filter(user_key=0).update(tokens_used=F("tokens_used") - 1)
    _, err = failing("--tenant", "alpha")
    assert "month counter tokens 2999 != events 3000" in err


def test_it_checks_the_invoice_of_the_month(usage):
    from billing.invoices import draft_invoice

    invoice = draft_invoice(usage.a.tenant, month_start())
    reconcile("--tenant", "alpha")
    with tenant_context(usage.a.tenant):
        Invoice.objects.filter(pk=invoice.pk).update(total=F("total") + Decimal("1.00"))
    _, err = failing("--tenant", "alpha")
    assert "!= sum of lines" in err and "!= base fee" in err


def test_a_past_months_invoice_must_match_its_events(world):
    last_month = month_start() - dt.timedelta(days=1)
    period = last_month.replace(day=1)
    with tenant_context(world.a.tenant):
        invoice = Invoice.objects.create(period=period, base_fee=100, total=100, tokens=10)
        InvoiceLine.objects.create(invoice=invoice, kind=InvoiceLineKind.BASE_FEE, description="Plan", amount=100)
    _, err = failing("--tenant", "alpha", "--month", f"{period:%Y-%m}")
    assert "tokens 10 != events 0" in err


def test_a_past_months_draft_is_checked_against_its_own_plan_terms_not_the_tier_now(world):
    from billing import invoices as inv
    from tests.billing.usage_helpers import at, record_usage

    period = month_start(month_start() - dt.timedelta(days=1))
    record_usage(world.a.tenant, at(period), input_tokens=2000, output_tokens=0, cost="0.01")
    with tenant_context(world.a.tenant):  # the month's counter, as metering keeps it
        MonthlyUsage.objects.create(month=period, user_key=0, tokens_used=2000, cost_used=Decimal("0.01"))
    inv.draft_invoice(world.a.tenant, period)
    tier = world.a.tenant.tier
    tier.monthly_price += 50
    tier.save()
    world.a.tenant.refresh_from_db()
    out, err = reconcile("--tenant", "alpha", "--month", f"{period:%Y-%m}")  # raises on a difference
    assert "ok   alpha" in out and err == ""


def test_bad_arguments_are_clear_errors(world):
    with pytest.raises(CommandError, match="--month must look like"):
        reconcile("--month", "2026-13")
    with pytest.raises(CommandError, match="No tenant with slug"):
        reconcile("--tenant", "nope")


def test_it_reports_a_reservation_an_ended_turn_still_holds(usage, catalogue):
    from agents.models import Invocation
    from billing.models import Reservation
    from tests.billing.helpers import ask

    tier = usage.a.tenant.tier
    tier.requests_per_minute = 1000
    tier.save()
    invocation = ask(usage.a, catalogue.helpdesk)
    reconcile("--tenant", "alpha")  # queued: holding its reservation is right
    with tenant_context(usage.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(status="failed")  # ended by a path that skips metering
        assert Reservation.objects.get(invocation_id=invocation.pk).status == "held"
    _, err = failing("--tenant", "alpha")
    assert f"reservation of ended turn {invocation.pk} still held" in err
