"""A tier change during a month prorates it: each tier's fee and included tokens by the share of
the month (by the second) spent on it. The included tokens are pooled for the month and used up
in time order; the tokens past the pool are overage at the price of the tier period they were
used in (test_pooled_quota). The invoice, the bill so far and the budget's ceiling agree."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import dashboards as d
from billing import invoices as inv
from billing import spend
from billing.accounting import month_start
from billing.models import InvoiceLine, MonthlyUsage, TierChange
from tenants import services
from tenants.context import all_tenants, tenant_context
from tests import factories
from tests.billing.usage_helpers import record_usage

pytestmark = pytest.mark.django_db

NOVEMBER = dt.date(2025, 11, 1)  # 30 days: 720 hours


def at(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2025, 11, day, hour, tzinfo=dt.UTC)


@pytest.fixture
def plans(world):
    """Basic: $30 a month, 3,000 tokens, then $1 per 1k. Pro: $90, 9,000 tokens, then $0.50 per 1k."""
    world.basic = factories.make_tier(
        "basic-p", monthly_price=Decimal("30.00"), included_tokens=3000, overage_price_per_1k_tokens=Decimal("1")
    )
    world.pro = factories.make_tier(
        "pro-p", monthly_price=Decimal("90.00"), included_tokens=9000, overage_price_per_1k_tokens=Decimal("0.5")
    )
    return world


def moves(tenant, *changes) -> None:
    """The tenant's tier changes, (when, from, to), as the tier-change service records them."""
    with tenant_context(tenant):
        for when, before, after in changes:
            TierChange.objects.create(tier_before=before, tier_after=after, effective_at=when)
    tenant.tier = changes[-1][2]
    tenant.save()


def use(tenant, when: dt.datetime, tokens: int) -> None:
    record_usage(tenant, when, input_tokens=tokens, output_tokens=0)
    with tenant_context(tenant):
        row, _ = MonthlyUsage.objects.get_or_create(month=NOVEMBER, user_key=0)
        MonthlyUsage.objects.filter(pk=row.pk).update(tokens_used=row.tokens_used + tokens)


def amounts(invoice) -> tuple:
    return invoice.base_fee, invoice.overage_amount, invoice.total


def test_it_prorates_a_mid_month_upgrade_by_the_second(plans):
    tenant = plans.a.tenant
    # Basic for 246 of 720 hours, Pro for 474.
    moves(tenant, (at(11, 6), plans.basic, plans.pro))
    # 1,025 + 5,925 = 6,950 pooled included tokens.
    use(tenant, at(5), 1500)  # on Basic: within the pool, 5,450 of it left
    use(tenant, at(20), 7000)  # on Pro: 1,550 past the pool at $0.50 / 1k = $0.775 → $0.78
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    # Fees: $30 × 246/720 = $10.25 and $90 × 474/720 = $59.25.
    assert amounts(invoice) == (Decimal("69.50"), Decimal("0.78"), Decimal("70.28"))
    with tenant_context(tenant):
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("id").values_list("kind", "amount"))
    assert lines == [
        ("base_fee", Decimal("10.25")),
        ("base_fee", Decimal("59.25")),
        ("token_overage", Decimal("0.78")),
    ]
    # The bill so far and the operator's revenue are the invoice's.
    with tenant_context(tenant):
        month = spend.month_spend(tenant, NOVEMBER)
    assert (month.bill.fee, month.bill.overage, month.bill.total) == amounts(invoice)
    with all_tenants("test"):
        assert {r.tenant.slug: r.revenue for r in d.operator_rows(NOVEMBER)}[tenant.slug] == Decimal("70.28")
    with tenant_context(tenant):
        assert "70.28" in inv.invoice_csv([invoice])


def test_it_prorates_a_mid_month_downgrade(plans):
    tenant = plans.a.tenant
    # Pro for 480 of 720 hours ($60.00, 6,000 included), Basic for 240 ($10.00, 1,000 included):
    # 7,000 pooled included tokens.
    moves(tenant, (at(21), plans.pro, plans.basic))
    use(tenant, at(3), 6500)  # within the pool, 500 of it left
    use(tenant, at(25), 1200)  # 700 past the pool, used on Basic: at $1 / 1k, $0.70
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("70.00"), Decimal("0.70"), Decimal("70.70"))
    with tenant_context(tenant):
        assert spend.month_spend(tenant, NOVEMBER).bill.total == Decimal("70.70")


def test_two_changes_in_one_month_make_three_tier_periods(plans):
    tenant = plans.a.tenant
    # Basic 246 h, Pro 240 h, Basic 234 h: $10.25 + $30.00 + $9.75; 1,025, 3,000 and 975 included,
    # 5,000 pooled.
    moves(tenant, (at(11, 6), plans.basic, plans.pro), (at(21, 6), plans.pro, plans.basic))
    use(tenant, at(5), 1500)  # within the pool: 3,500 left
    use(tenant, at(15), 3000)  # within the pool: 500 left
    use(tenant, at(25), 2000)  # 1,500 past the pool at $1: $1.50
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("50.00"), Decimal("1.50"), Decimal("51.50"))
    with tenant_context(tenant):
        assert spend.month_spend(tenant, NOVEMBER).bill.total == Decimal("51.50")


def test_a_change_at_the_month_boundary_bills_the_month_wholly_on_the_new_tier(plans):
    tenant = plans.a.tenant
    moves(tenant, (at(1), plans.basic, plans.pro))  # 1 November, 00:00 UTC
    use(tenant, at(10), 9500)  # 500 over Pro's 9,000 at $0.50 / 1k: $0.25
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("90.00"), Decimal("0.25"), Decimal("90.25"))
    assert [p.share for p in inv.tier_periods(tenant, NOVEMBER)] == [Decimal(1)]


def test_the_budgets_ceiling_is_the_prorated_bill_at_the_budget(plans):
    tenant = plans.a.tenant
    moves(tenant, (at(11, 6), plans.basic, plans.pro))
    use(tenant, at(5), 1500)
    with tenant_context(tenant):
        plan = spend.month_plan(tenant, NOVEMBER)
    # $69.50 of fees leave $1.52 of a $71.02 budget: 3,040 Pro tokens past the month's 6,950
    # pooled included tokens (1,025 + 5,925; the 1,500 used on Basic are within them).
    ceiling = spend.budget_token_ceiling(plan, Decimal("71.02"))
    assert ceiling == 1025 + 5925 + 3040
    assert spend.bill(plan, ceiling).total == Decimal("71.02")
    assert spend.bill(plan, ceiling + 1000).total > Decimal("71.02")


def test_the_tier_change_service_records_the_change_with_the_tier_it_left(plans, operator):
    tenant = plans.a.tenant
    tenant.tier = plans.basic
    tenant.save()
    services.update_tenant(operator, tenant, tier=plans.pro)
    with tenant_context(tenant):
        change = TierChange.objects.get()
    assert (change.tier_before_id, change.tier_after_id) == (plans.basic.pk, plans.pro.pk)


def _moved_tenant(plans, slug: str):
    """A tenant moved from Basic to Pro on 11 November, 06:00, with usage on both tiers:
    $70.28 for November (test_it_prorates_a_mid_month_upgrade_by_the_second)."""
    tenant = factories.make_tenant(slug, tier=plans.basic)
    moves(tenant, (at(11, 6), plans.basic, plans.pro))
    use(tenant, at(5), 1500)
    use(tenant, at(20), 7000)
    return tenant


def _operator_table_queries(month: dt.date) -> tuple[int, dict]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with all_tenants("test"), CaptureQueriesContext(connection) as queries:
        revenue = {r.tenant.slug: r.revenue for r in d.operator_rows(month)}
    return len(queries), revenue


def test_the_operator_table_reads_every_tenants_tier_periods_in_a_fixed_number_of_queries(plans):
    for side in (plans.a, plans.b):
        side.tenant.tier = plans.basic
        side.tenant.save()
        moves(side.tenant, (at(11, 6), plans.basic, plans.pro))
        use(side.tenant, at(5), 1500)
        use(side.tenant, at(20), 7000)
    two, revenue = _operator_table_queries(NOVEMBER)
    assert revenue == {plans.a.tenant.slug: Decimal("70.28"), plans.b.tenant.slug: Decimal("70.28")}
    for n in range(4):
        _moved_tenant(plans, f"moved-{n}")
    six, revenue = _operator_table_queries(NOVEMBER)
    assert len(revenue) == 6
    assert set(revenue.values()) == {Decimal("70.28")}
    assert six == two
    for n in range(2):  # and tenants whose tier did not change: their whole month on Basic
        factories.make_tenant(f"stayed-{n}", tier=plans.basic)
    eight, revenue = _operator_table_queries(NOVEMBER)
    assert revenue["stayed-0"] == revenue["stayed-1"] == Decimal("30.00")
    assert eight == two


def onboarded(tenant, when: dt.datetime):
    """The tenant was onboarded at `when` (created_at is set on insert, so it is moved after)."""
    from tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(created_at=when)
    tenant.refresh_from_db()
    return tenant


def test_a_tenant_onboarded_mid_month_pays_the_fee_and_gets_the_tokens_from_its_start(plans):
    # Onboarded on Basic on 16 November, 00:00: 360 of 720 hours, half the month — $15.00 and
    # 1,500 included tokens; 2,000 used, 500 over at $1 / 1k: $0.50.
    tenant = factories.make_tenant("late", tier=plans.basic)
    onboarded(tenant, at(16))
    use(tenant, at(20), 2000)
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("15.00"), Decimal("0.50"), Decimal("15.50"))
    with tenant_context(tenant):
        lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("id").values_list("kind", "amount"))
        month = spend.month_spend(tenant, NOVEMBER)
        plan = spend.month_plan(tenant, NOVEMBER)
    assert lines == [("base_fee", Decimal("15.00")), ("token_overage", Decimal("0.50"))]
    assert (month.bill.fee, month.bill.overage, month.bill.total) == amounts(invoice)
    with all_tenants("test"):
        assert {r.tenant.slug: r.revenue for r in d.operator_rows(NOVEMBER)}["late"] == Decimal("15.50")
    # A $16.00 budget leaves $1.00 above the prorated fee: 1,000 tokens past the 1,500 included.
    assert spend.budget_token_ceiling(plan, Decimal("16.00")) == 2500
    # A tenant onboarded before the month pays the whole of it.
    assert amounts(inv.draft_invoice(plans.a.tenant, NOVEMBER))[0] == plans.a.tenant.tier.monthly_price


def test_an_onboarding_and_a_tier_change_in_one_month_prorate_together(plans):
    # Onboarded on Basic on 11 November, 06:00 (Basic until 21 November, 06:00: 240 h, $10.00,
    # 1,000 included), then Pro for 234 h ($29.25, 2,925 included); nothing before onboarding.
    # 3,925 pooled included tokens.
    tenant = onboarded(factories.make_tenant("late-mover", tier=plans.basic), at(11, 6))
    moves(tenant, (at(21, 6), plans.basic, plans.pro))
    use(tenant, at(15), 1200)  # within the pool: 2,725 left
    use(tenant, at(25), 3000)  # 275 past the pool on Pro at $0.50 / 1k: $0.1375 → $0.14
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("39.25"), Decimal("0.14"), Decimal("39.39"))
    with tenant_context(tenant):
        assert spend.month_spend(tenant, NOVEMBER).bill.total == Decimal("39.39")
    with all_tenants("test"):
        assert {r.tenant.slug: r.revenue for r in d.operator_rows(NOVEMBER)}["late-mover"] == Decimal("39.39")


def reprice(operator, tier, monthly: str, included: int, per_1k: str):
    """The operator edits the tier's prices (the tier form's service), today."""
    tier.monthly_price, tier.included_tokens = Decimal(monthly), included
    tier.overage_price_per_1k_tokens = Decimal(per_1k)
    return services.save_tier(operator, tier)


def test_a_closed_month_keeps_the_prices_in_force_then_when_its_tier_is_repriced(plans, operator):
    tenant = plans.a.tenant
    tenant.tier = plans.basic
    tenant.save()
    use(tenant, at(10), 4000)  # Basic: $30, 3,000 included, 1,000 over at $1 / 1k: $1.00
    # Never drafted during November (nothing recorded on an invoice); Basic is repriced today.
    reprice(operator, plans.basic, "60.00", 1000, "2")
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("30.00"), Decimal("1.00"), Decimal("31.00"))
    with tenant_context(tenant):
        assert spend.month_spend(tenant, NOVEMBER).bill.total == Decimal("31.00")
    with all_tenants("test"):
        assert {r.tenant.slug: r.revenue for r in d.operator_rows(NOVEMBER)}[tenant.slug] == Decimal("31.00")
    # The running month is billed at the prices as they stand.
    assert inv.draft_invoice(tenant, month_start()).base_fee == Decimal("60.00")


def test_a_prorated_closed_month_keeps_each_tiers_prices_in_force_then(plans, operator):
    tenant = plans.a.tenant
    moves(tenant, (at(11, 6), plans.basic, plans.pro))
    use(tenant, at(5), 1500)
    use(tenant, at(20), 7000)
    assert amounts(inv.draft_invoice(tenant, NOVEMBER))[2] == Decimal("70.28")
    reprice(operator, plans.basic, "60.00", 1000, "2")
    reprice(operator, plans.pro, "180.00", 1000, "2")
    invoice = inv.draft_invoice(tenant, NOVEMBER)
    assert amounts(invoice) == (Decimal("69.50"), Decimal("0.78"), Decimal("70.28"))
    with tenant_context(tenant):
        assert spend.month_spend(tenant, NOVEMBER).bill.total == Decimal("70.28")
    with all_tenants("test"):
        assert {r.tenant.slug: r.revenue for r in d.operator_rows(NOVEMBER)}[tenant.slug] == Decimal("70.28")
