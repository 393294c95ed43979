"""A month whose tier changed pools its included tokens: the sum of every tier period's prorated
quota, used up by the month's tokens in time order. Only tokens past the pool are overage, each
billed at the overage price of the tier period it was used in, so a tier change alone never
bills overage. The invoice, the tenant's bill so far, its dashboard and the operator's revenue
all come from the same periods (billing.invoices.tier_periods)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import dashboards as d
from billing import invoices as inv
from billing import spend
from billing.models import InvoiceLine
from tenants.context import all_tenants, tenant_context
from tests import factories
from tests.billing.test_proration import NOVEMBER, amounts, at, moves, use

pytestmark = pytest.mark.django_db


@pytest.fixture
def standard(world):
    """Standard: $500 a month, 1,000,000 tokens, then $1 per 1k. Premium: $1,000, 2,000,000
    tokens, then $0.50 per 1k. A tenant on Standard moves to Premium on 16 November, 00:00:
    half the month on each ($250.00 + $500.00 of fees), so 500,000 + 1,000,000 = 1,500,000 pooled included tokens."""
    world.standard = factories.make_tier(
        "standard-q",
        monthly_price=Decimal("500.00"),
        included_tokens=1_000_000,
        overage_price_per_1k_tokens=Decimal("1"),
    )
    world.premium = factories.make_tier(
        "premium-q",
        monthly_price=Decimal("1000.00"),
        included_tokens=2_000_000,
        overage_price_per_1k_tokens=Decimal("0.5"),
    )
    tenant = world.a.tenant
    tenant.tier = world.standard
    tenant.save()
    moves(tenant, (at(16), world.standard, world.premium))
    return world


def lines_of(tenant, invoice) -> list[tuple]:
    with tenant_context(tenant):
        return list(InvoiceLine.objects.filter(invoice=invoice).order_by("id").values_list("kind", "amount"))


def test_it_bills_no_overage_for_a_month_under_the_quota_because_the_tier_changed(standard):
    tenant = standard.a.tenant
    use(tenant, at(10), 600_000)  # more than Standard's half-month 500,000, less than the pool
    use(tenant, at(20), 100_000)
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("750.00"), Decimal("0.00"), Decimal("750.00"))
    assert lines_of(tenant, invoice) == [("base_fee", Decimal("250.00")), ("base_fee", Decimal("500.00"))]


def test_it_bills_only_the_tokens_past_the_pooled_quota_at_the_price_of_their_period(standard):
    tenant = standard.a.tenant
    use(tenant, at(10), 600_000)  # within the pool: 900,000 of it left for Premium
    use(tenant, at(20), 1_100_000)  # 200,000 past it, at Premium's $0.50 / 1k: $100.00
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("750.00"), Decimal("100.00"), Decimal("850.00"))
    assert lines_of(tenant, invoice) == [
        ("base_fee", Decimal("250.00")),
        ("base_fee", Decimal("500.00")),
        ("token_overage", Decimal("100.00")),
    ]


def test_tokens_past_the_pool_in_an_earlier_period_are_billed_at_its_price(standard):
    tenant = standard.a.tenant
    use(tenant, at(10), 1_600_000)  # 100,000 past the whole pool on Standard, $1 / 1k: $100.00
    use(tenant, at(20), 50_000)  # nothing left of the pool: all over at Premium's $0.50 / 1k: $25.00
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("750.00"), Decimal("125.00"), Decimal("875.00"))
    assert lines_of(tenant, invoice) == [
        ("base_fee", Decimal("250.00")),
        ("token_overage", Decimal("100.00")),
        ("base_fee", Decimal("500.00")),
        ("token_overage", Decimal("25.00")),
    ]


def test_a_period_with_a_fee_of_nothing_and_no_overage_gets_no_invoice_line(standard):
    tenant = factories.make_tenant("brief", tier=standard.standard)
    # Ten seconds of Standard ($500 × 10 / 2,592,000 s rounds to $0.00), then Premium.
    moves(tenant, (at(1) + dt.timedelta(seconds=10), standard.standard, standard.premium))
    use(tenant, at(20), 1000)
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("1000.00"), Decimal("0.00"), Decimal("1000.00"))
    assert lines_of(tenant, invoice) == [("base_fee", Decimal("1000.00"))]


def test_the_invoice_the_bill_so_far_and_the_operators_revenue_agree_on_a_pooled_month(standard):
    tenant = standard.a.tenant
    use(tenant, at(10), 600_000)
    use(tenant, at(20), 1_100_000)
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    with tenant_context(tenant):
        so_far = spend.month_spend(tenant, NOVEMBER).bill
        outlook = d.month_outlook(tenant, now=at(30, 12))
        row = d.operator_row(tenant, NOVEMBER)
    with all_tenants("test"):
        table = {r.tenant.slug: r for r in d.operator_rows(NOVEMBER)}[tenant.slug]
    assert (so_far.fee, so_far.overage, so_far.total) == amounts(invoice)
    assert (outlook.bill.total, outlook.overage_tokens, outlook.overage_charge) == (
        invoice.total,
        200_000,
        Decimal("100.00"),
    )
    assert (row.revenue, row.overage_tokens, row.overage) == (invoice.total, 200_000, Decimal("100.00"))
    assert row.included_tokens == 1_500_000  # the quota the operator's tenant page names: the pool
    assert (table.revenue, table.overage_tokens, table.overage) == (invoice.total, 200_000, Decimal("100.00"))


def test_the_operators_tenant_page_names_a_prorated_months_fees_as_prorated(world, operator, client):
    """Its revenue line named the tier of today ("Premium fee") for a fee that was half Standard's."""
    from django.utils import timezone

    tenant = world.a.tenant
    standard = factories.make_tier("standard-p", monthly_price=Decimal("500.00"), included_tokens=1_000_000)
    premium = factories.make_tier("premium-p", monthly_price=Decimal("1000.00"), included_tokens=2_000_000)
    tenant.tier = standard
    tenant.save()
    moves(tenant, (timezone.now() - dt.timedelta(seconds=1), standard, premium))
    client.force_login(operator)
    page = client.get(f"/operator/billing/tenants/{tenant.slug}/").content.decode()
    assert "plan fees, prorated over this month's tiers" in page
    assert "Premium-p fee" not in page and "premium-p fee" not in page.lower()


# --- what the tenant's dashboard says the overage is priced at ---------------------------------


def _gauge_note(page: str) -> str:
    """The text under the token gauge, tags stripped, whitespace collapsed."""
    import re

    note = page.split('<p class="gauge-note">', 1)[1].split("</p>", 1)[0]
    return " ".join(re.sub(r"<[^>]+>", "", note).split())


@pytest.fixture
def moved_this_month(world):
    """Tenant A moved from Standard ($1 per 1k past 1,000 tokens) to Premium ($0.50 per 1k past
    2,000) halfway through the month so far, with 100,000 tokens used on each: overage on both."""
    from django.utils import timezone

    from billing.accounting import month_start
    from tests.billing.usage_helpers import record_usage

    now = timezone.now()
    start = dt.datetime.combine(month_start(now), dt.time.min, tzinfo=dt.UTC)
    change = start + (now - start) / 2
    standard = factories.make_tier("standard-d", included_tokens=1000, overage_price_per_1k_tokens=Decimal("1"))
    premium = factories.make_tier("premium-d", included_tokens=2000, overage_price_per_1k_tokens=Decimal("0.5"))
    tenant = world.a.tenant
    tenant.tier = standard
    tenant.save()
    moves(tenant, (change, standard, premium))
    record_usage(tenant, start + (change - start) / 2, input_tokens=100_000, output_tokens=0)
    record_usage(tenant, change + (now - change) / 2, input_tokens=100_000, output_tokens=0)
    return world


def test_the_dashboard_names_each_tier_periods_overage_price_in_a_month_with_a_tier_change(client, moved_this_month):
    """It said "overage at $0.50 per 1k" (today's tier) for overage half billed at Standard's $1."""
    client.force_login(moved_this_month.a.owner)

    note = _gauge_note(client.get("/t/alpha/billing/").content.decode())

    assert "at the overage price of the plan in force when they were used" in note
    assert "Standard-D $1.00 per 1k until" in note, note
    assert "Premium-D $0.50 per 1k from" in note
    assert "overage at $0.50 per 1k." not in note, note


def test_the_dashboard_names_the_one_overage_price_of_a_month_on_one_tier(client, world):
    from django.utils import timezone

    from tests.billing.usage_helpers import record_usage

    world.a.tenant.tier = factories.make_tier("one-d", overage_price_per_1k_tokens=Decimal("0.5"))
    world.a.tenant.save()
    record_usage(world.a.tenant, timezone.now(), input_tokens=100_000, output_tokens=0)
    client.force_login(world.a.owner)

    note = _gauge_note(client.get("/t/alpha/billing/").content.decode())

    assert note.endswith(" overage at $0.50 per 1k."), note
    assert "plan in force" not in note
