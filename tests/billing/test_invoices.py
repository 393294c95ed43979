"""Invoices: drafted from the roll-ups, idempotent, final means final, finalising is audited."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import pytest

from billing import dashboards
from billing import invoices as inv
from billing.accounting import month_start, next_month
from billing.models import Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus
from billing.tasks import draft_monthly_invoices
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, TenantStatus
from tenants.services import ServiceError
from tests.billing.usage_helpers import at, record_usage

pytestmark = pytest.mark.django_db

LAST_MONTH = month_start(month_start() - dt.timedelta(days=1))


@pytest.fixture
def priced(world):
    """Tier: $100 a month, 1,000 tokens included, $0.50 per 1k over."""
    tier = world.a.tenant.tier
    tier.monthly_price = Decimal("100.00")
    tier.included_tokens = 1000
    tier.overage_price_per_1k_tokens = Decimal("0.5")
    tier.save()
    world.a.tenant.refresh_from_db()
    world.b.tenant.refresh_from_db()
    return world


def lines_of(invoice) -> list[tuple]:
    with tenant_context(invoice.tenant):
        return list(
            InvoiceLine.objects.filter(invoice=invoice).order_by("id").values_list("kind", "quantity", "amount")
        )


def test_invoice_amounts_bill_the_base_fee_plus_overage_to_the_cent(priced):
    tier = priced.a.tenant.tier
    assert inv.invoice_amounts(tier, 900) == (Decimal("100.00"), Decimal("0.00"), Decimal("100.00"))
    # 2,333 over at $0.50 / 1k = $1.1665 → $1.17 (half up)
    assert inv.invoice_amounts(tier, 3333) == (Decimal("100.00"), Decimal("1.17"), Decimal("101.17"))


def test_a_draft_has_a_base_fee_line_and_an_overage_line_from_the_rollups(priced):
    record_usage(
        priced.a.tenant, at(LAST_MONTH + dt.timedelta(days=3)), input_tokens=2000, output_tokens=1500, cost="0.25"
    )
    record_usage(
        priced.a.tenant, at(next_month(LAST_MONTH)), input_tokens=99_999, cost="9"
    )  # next month: not billed here
    record_usage(priced.b.tenant, at(LAST_MONTH), input_tokens=50_000)  # another tenant
    invoice = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    assert invoice.status == InvoiceStatus.DRAFT
    assert invoice.tokens == 3500
    assert invoice.cost == Decimal("0.25")
    assert (invoice.base_fee, invoice.overage_amount, invoice.total) == (
        Decimal("100.00"),
        Decimal("1.25"),
        Decimal("101.25"),
    )
    assert lines_of(invoice) == [
        (InvoiceLineKind.BASE_FEE, Decimal("1.000"), Decimal("100.00")),
        (InvoiceLineKind.TOKEN_OVERAGE, Decimal("2.500"), Decimal("1.25")),
    ]


def test_redrafting_with_the_same_usage_changes_nothing_and_adds_no_rows(priced):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=5000, output_tokens=0)
    first = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    second = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    assert second.pk == first.pk
    assert (second.total, second.tokens) == (first.total, first.tokens)
    assert lines_of(second) == lines_of(first)
    with tenant_context(priced.a.tenant):
        assert Invoice.objects.count() == 1
        assert InvoiceLine.objects.count() == 2


def test_redrafting_a_draft_follows_new_usage(priced):
    inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    record_usage(priced.a.tenant, at(LAST_MONTH + dt.timedelta(days=10)), input_tokens=3000, output_tokens=0)
    invoice = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    assert invoice.tokens == 3000
    assert invoice.total == Decimal("101.00")
    assert [kind for kind, _, _ in lines_of(invoice)] == [InvoiceLineKind.BASE_FEE, InvoiceLineKind.TOKEN_OVERAGE]


def test_a_final_invoice_never_changes_whatever_is_drafted_later(priced, operator):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=2000, output_tokens=0)
    draft = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    final = inv.finalise_invoice(operator, draft)
    before = (final.total, final.tokens, final.cost, lines_of(final))
    record_usage(priced.a.tenant, at(LAST_MONTH + dt.timedelta(days=5)), input_tokens=40_000, output_tokens=0, cost="3")
    again = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    inv.draft_all(LAST_MONTH)
    with tenant_context(priced.a.tenant):
        stored = Invoice.objects.get(pk=final.pk)
    assert again.status == InvoiceStatus.FINAL
    assert (stored.total, stored.tokens, stored.cost, lines_of(stored)) == before


def test_finalising_redrafts_freezes_and_writes_the_audit_log(priced, operator):
    draft = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=1500, output_tokens=0)  # after the last draft
    final = inv.finalise_invoice(operator, draft, ip="192.0.2.7")
    assert final.status == InvoiceStatus.FINAL
    assert final.tokens == 1500  # the last redraft took the late usage in
    assert final.finalized_by == operator and final.finalized_at is not None
    with all_tenants("test"):
        entry = AuditLog.unscoped.get(action="invoice.finalised")
    assert entry.tenant_id == priced.a.tenant.pk
    assert entry.actor_id == operator.pk
    assert entry.after["total"] == str(final.total)
    assert entry.ip_address == "192.0.2.7"


def test_finalising_is_refused_for_an_open_month_a_final_invoice_and_non_staff(priced, operator):
    current = inv.draft_invoice(priced.a.tenant, month_start())
    with pytest.raises(ServiceError, match="not over yet"):
        inv.finalise_invoice(operator, current)
    past = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    with pytest.raises(ServiceError, match="Only operators"):
        inv.finalise_invoice(priced.a.owner, past)
    inv.finalise_invoice(operator, past)
    with pytest.raises(ServiceError, match="already final"):
        inv.finalise_invoice(operator, past)


def test_the_scheduled_task_drafts_this_and_last_month_for_every_active_tenant(priced, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=1200, output_tokens=0)
    sent = draft_monthly_invoices()
    assert sent == 4  # two tenants × two months
    sent_again = draft_monthly_invoices()
    assert sent_again == 4
    with all_tenants("test"):
        periods = sorted(Invoice.unscoped.values_list("tenant__slug", "period"))
        assert Invoice.unscoped.count() == 4
    assert periods == sorted(
        [("alpha", LAST_MONTH), ("alpha", month_start()), ("bravo", LAST_MONTH), ("bravo", month_start())]
    )


def suspend(tenant):
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_reason = "unpaid"
    tenant.save()


def invoice_totals(period) -> dict:
    with all_tenants("test"):
        return {i.tenant.slug: i.total for i in Invoice.unscoped.select_related("tenant").filter(period=period)}


def operator_revenue(period) -> dict:
    with all_tenants("test"):
        return {r.tenant.slug: r.revenue for r in dashboards.operator_rows(period)}


def test_a_tenant_suspended_after_using_a_month_is_invoiced_for_it_as_the_operator_table_says(priced, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    record_usage(priced.a.tenant, at(LAST_MONTH + dt.timedelta(days=3)), input_tokens=2000, output_tokens=1500)
    suspend(priced.a.tenant)
    draft_monthly_invoices()
    assert invoice_totals(LAST_MONTH)["alpha"] == Decimal("101.25")
    assert operator_revenue(LAST_MONTH)["alpha"] == Decimal("101.25")
    with all_tenants("test"):
        Invoice.unscoped.all().delete()
    inv.draft_all(LAST_MONTH)  # the operator's "Draft last month" button
    assert invoice_totals(LAST_MONTH)["alpha"] == Decimal("101.25")


def test_a_month_invoiced_while_active_keeps_following_usage_after_a_suspension(priced, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    draft_monthly_invoices()  # while active: this month's running draft exists
    suspend(priced.a.tenant)
    record_usage(priced.a.tenant, at(month_start()), input_tokens=3000, output_tokens=0)
    draft_monthly_invoices()
    assert invoice_totals(month_start())["alpha"] == Decimal("101.00")
    assert operator_revenue(month_start())["alpha"] == Decimal("101.00")


def test_a_suspended_tenant_owes_nothing_for_a_month_it_did_not_use(priced, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    suspend(priced.a.tenant)
    sent = draft_monthly_invoices()
    inv.draft_all(LAST_MONTH)
    assert sent == 2  # bravo's two months only
    assert "alpha" not in invoice_totals(LAST_MONTH)
    assert operator_revenue(LAST_MONTH)["alpha"] == Decimal("0.00")


def reprice(tier, monthly: str, included: int, per_1k: str) -> None:
    tier.monthly_price, tier.included_tokens = Decimal(monthly), included
    tier.overage_price_per_1k_tokens = Decimal(per_1k)
    tier.save()


def test_a_finished_month_keeps_its_plan_terms_when_the_tier_changes_after_it(priced, operator, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    record_usage(priced.a.tenant, at(LAST_MONTH + dt.timedelta(days=3)), input_tokens=2000, output_tokens=1500)
    draft_monthly_invoices()  # $100, 1,000 included, $0.50 / 1k: 100 + 2.5 × 0.50
    reprice(priced.a.tenant.tier, "150.00", 500, "1.0")  # the new month's prices, set on the 1st
    priced.a.tenant.refresh_from_db()
    draft_monthly_invoices()  # the hourly beat redrafts last month
    with tenant_context(priced.a.tenant):
        invoice = Invoice.objects.get(period=LAST_MONTH)
    assert (invoice.total, invoice.plan_monthly_price, invoice.plan_included_tokens) == (
        Decimal("101.25"),
        Decimal("100.00"),
        1000,
    )
    assert operator_revenue(LAST_MONTH)["alpha"] == Decimal("101.25")
    final = inv.finalise_invoice(operator, invoice)
    assert final.total == Decimal("101.25")
    assert lines_of(final) == [
        (InvoiceLineKind.BASE_FEE, Decimal("1.000"), Decimal("100.00")),
        (InvoiceLineKind.TOKEN_OVERAGE, Decimal("2.500"), Decimal("1.25")),
    ]
    # The running month is billed at the tier as it stands.
    assert inv.draft_invoice(priced.a.tenant, month_start()).base_fee == Decimal("150.00")


def test_the_plan_terms_follow_the_tier_while_the_month_runs_and_stay_once_it_is_over(priced):
    period = month_start()
    invoice = inv.draft_invoice(priced.a.tenant, period)  # records $100 / 1,000 / $0.50
    reprice(priced.a.tenant.tier, "150.00", 500, "1.0")
    priced.a.tenant.refresh_from_db()
    during, after = period + dt.timedelta(days=10), next_month(period)
    assert inv.plan_terms(priced.a.tenant, period, invoice, today=during).monthly_price == Decimal("150.00")
    assert inv.plan_terms(priced.a.tenant, period, invoice, today=after) == inv.PlanTerms(
        priced.a.tenant.tier.name, Decimal("100.00"), 1000, Decimal("0.500000")
    )


def test_csv_and_json_exports_carry_every_line_and_the_total(priced):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=3000, output_tokens=0)
    invoice = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    with tenant_context(priced.a.tenant):
        rows = list(csv.DictReader(io.StringIO(inv.invoice_csv([invoice]))))
        data = json.loads(inv.invoice_json([invoice]))
    assert [(r["line_kind"], r["amount"], r["invoice_total"]) for r in rows] == [
        ("base_fee", "100.00", "101.00"),
        ("token_overage", "1.00", "101.00"),
    ]
    assert rows[0]["invoice_id"] == inv.invoice_number(invoice)
    (only,) = data["invoices"]
    assert only["total"] == "101.00" and only["period"] == f"{LAST_MONTH:%Y-%m}" and only["status"] == "draft"
    assert sum(Decimal(line["amount"]) for line in only["lines"]) == Decimal(only["total"])


@pytest.mark.parametrize(
    ("monthly_price", "per_1k", "expected"),
    [
        ("100.00", "0.5", [("1.000", "100.00"), ("2.500", "0.50")]),
        ("4900.00", "10", [("1.000", "4900.00"), ("2.500", "10.00")]),
        ("10.00", "0.00125", [("1.000", "10.00"), ("2.500", "0.00125")]),
    ],
)
def test_exports_write_unit_prices_as_plain_decimals_and_quantities_to_the_thousandth(
    priced, monthly_price, per_1k, expected
):
    tier = priced.a.tenant.tier
    tier.monthly_price = Decimal(monthly_price)
    tier.overage_price_per_1k_tokens = Decimal(per_1k)
    tier.save()
    priced.a.tenant.refresh_from_db()
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=3500, output_tokens=0)
    invoice = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    with tenant_context(priced.a.tenant):
        rows = list(csv.DictReader(io.StringIO(inv.invoice_csv([invoice]))))
        (data,) = json.loads(inv.invoice_json([invoice]))["invoices"]
    assert [(r["quantity"], r["unit_price"]) for r in rows] == expected
    assert [(line["quantity"], line["unit_price"]) for line in data["lines"]] == expected
