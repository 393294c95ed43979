"""A change of plan re-prices the running month at once: the operator's revenue and the
draft invoices (the tenant's and the operator's lists) never disagree in between."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest

from billing import dashboards as d
from billing import invoices as inv
from billing.accounting import month_start, next_month
from billing.models import Invoice, InvoiceLine, InvoiceLineKind
from tenants import services
from tenants.context import all_tenants, tenant_context
from tenants.models import Tenant, TenantStatus
from tests import factories
from tests.billing.usage_helpers import at, record_usage, today

pytestmark = pytest.mark.django_db

THIS_MONTH = month_start()
LAST_MONTH = month_start(THIS_MONTH - dt.timedelta(days=1))


@pytest.fixture
def standard(world):
    """Alpha and Bravo on Standard ($499, 1,000 tokens, $0.50 / 1k over), drafted for this month
    and last month as the hourly redraft leaves them; a third tenant on another tier."""
    tier = factories.make_tier(
        "standard", monthly_price=Decimal("499.00"), included_tokens=1000, overage_price_per_1k_tokens=Decimal("0.5")
    )
    for tenant in (world.a.tenant, world.b.tenant):
        tenant.tier = tier
        tenant.save()
    world.other = factories.make_tenant("other", tier=factories.make_tier("basic", monthly_price=Decimal("49.00")))
    record_usage(world.a.tenant, at(today()), input_tokens=3000, output_tokens=0)
    record_usage(world.a.tenant, at(LAST_MONTH), input_tokens=100, output_tokens=0)
    for period in (LAST_MONTH, THIS_MONTH):
        inv.draft_all(period)
    world.tier = tier
    return world


def tier_form(tier, **overrides) -> dict:
    data = {
        "name": tier.name,
        "slug": tier.slug,
        "description": tier.description,
        "monthly_price": str(tier.monthly_price),
        "included_tokens": str(tier.included_tokens),
        "overage_price_per_1k_tokens": str(tier.overage_price_per_1k_tokens),
        "requests_per_minute": str(tier.requests_per_minute),
        "tokens_per_minute": str(tier.tokens_per_minute),
        "concurrent_sessions": str(tier.concurrent_sessions),
        "allowed_models": ", ".join(tier.allowed_models),
        "default_features": tier.default_features,
        "celery_queue": tier.celery_queue,
    }
    data.update(overrides)
    return data


def revenue_by_tenant(month=THIS_MONTH) -> dict[str, Decimal]:
    with all_tenants("test"):
        return {r.tenant.slug: r.revenue for r in d.operator_rows(month) if r.billable}


def invoice_totals(month=THIS_MONTH) -> dict[str, Decimal]:
    with all_tenants("test"):
        return {i.tenant.slug: i.total for i in Invoice.unscoped.filter(period=month).select_related("tenant")}


def test_it_redraws_the_drafts_of_the_tiers_tenants_when_its_price_changes(client, standard, operator):
    assert revenue_by_tenant() == invoice_totals()
    client.force_login(operator)

    response = client.post("/operator/tiers/standard/", tier_form(standard.tier, monthly_price="599.00"))

    assert response.status_code == 302
    assert revenue_by_tenant() == invoice_totals()
    assert invoice_totals() == {"alpha": Decimal("600.00"), "bravo": Decimal("599.00"), "other": Decimal("49.00")}
    assert sum(invoice_totals().values()) == d.operator_totals(_rows()).revenue
    with tenant_context(standard.b.tenant):
        [base_fee] = InvoiceLine.objects.filter(invoice__period=THIS_MONTH, kind=InvoiceLineKind.BASE_FEE)
    assert base_fee.amount == Decimal("599.00")
    follow = client.get("/operator/tiers/")
    assert "the draft invoices of 2 tenants were redrawn" in follow.content.decode()


def test_it_keeps_the_month_that_is_over_at_the_price_it_was_billed_at(client, standard, operator):
    before = invoice_totals(LAST_MONTH)
    client.force_login(operator)
    client.post("/operator/tiers/standard/", tier_form(standard.tier, monthly_price="599.00"))
    assert invoice_totals(LAST_MONTH) == before == revenue_by_tenant(LAST_MONTH)


def test_the_tenants_own_invoice_shows_the_new_price_at_once(client, standard, operator):
    client.force_login(operator)
    client.post("/operator/tiers/standard/", tier_form(standard.tier, included_tokens="5000"))
    client.force_login(standard.a.owner)
    response = client.get(f"/t/{standard.a.tenant.slug}/billing/invoices/")
    assert response.status_code == 200
    [current] = [i for i in response.context["invoices"] if i.period == THIS_MONTH]
    assert current.total == Decimal("499.00")  # 3,000 tokens are now inside the 5,000 included


def test_the_edit_form_says_before_saving_how_many_tenants_a_price_change_reprices(client, standard, operator):
    client.force_login(operator)
    response = client.get("/operator/tiers/standard/")
    page = response.content.decode()
    assert response.context["reprice_count"] == 2
    assert f"{THIS_MONTH:%B %Y}: saving re-prices the month running now" in " ".join(page.split())
    assert "<strong>2 tenants</strong>" in page


def test_it_leaves_the_invoices_alone_when_no_price_changes(client, standard, operator):
    with all_tenants("test"):
        drafted = dict(Invoice.unscoped.filter(period=THIS_MONTH).values_list("tenant__slug", "drafted_at"))
    client.force_login(operator)
    client.post("/operator/tiers/standard/", tier_form(standard.tier, requests_per_minute="7"))
    with all_tenants("test"):
        assert dict(Invoice.unscoped.filter(period=THIS_MONTH).values_list("tenant__slug", "drafted_at")) == drafted


def test_a_tenant_onboarded_today_has_the_draft_invoice_its_revenue_counts(client, standard, operator):
    client.force_login(operator)
    response = client.post(
        "/operator/tenants/new/",
        {"name": "Newco", "slug": "newco", "tier": standard.tier.pk, "deployment_model": "pool", "region": "us-east-1"},
    )
    assert response.status_code == 302
    # Its first month is billed from its onboarding, by the second, like a tier change.
    newco = Tenant.objects.get(slug="newco")
    start = dt.datetime.combine(THIS_MONTH, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(next_month(THIS_MONTH), dt.time.min, tzinfo=dt.UTC)
    second = dt.timedelta(seconds=1)
    share = Decimal((end - newco.created_at.replace(microsecond=0)) // second) / Decimal((end - start) // second)
    assert invoice_totals()["newco"] == (Decimal("499.00") * share).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert revenue_by_tenant() == invoice_totals()
    listed = client.get("/operator/billing/invoices/", {"month": f"{THIS_MONTH:%Y-%m}"})
    assert "newco" in {i.tenant.slug for i in listed.context["invoices"]}


def test_a_tenant_moved_to_another_tier_is_billed_prorated_at_once(standard, operator):
    services.update_tenant(operator, standard.b.tenant, tier=standard.other.tier)
    # Standard ($499) until now, Basic ($49) for the rest of the month (billing.invoices.tier_periods).
    before, after = inv.tier_periods(standard.b.tenant, THIS_MONTH)
    assert (before.terms.monthly_price, after.terms.monthly_price) == (Decimal("499.00"), Decimal("49.00"))
    assert before.share > 0 and after.share > 0
    assert invoice_totals()["bravo"] == before.fee + after.fee
    assert revenue_by_tenant() == invoice_totals()


def test_a_tenant_reactivated_owes_the_running_month_again(operator, world):
    tenant = factories.make_tenant("dormant", status=TenantStatus.SUSPENDED)
    services.set_tenant_status(operator, tenant, TenantStatus.ACTIVE)
    assert invoice_totals()["dormant"] == revenue_by_tenant()["dormant"] == Decimal("100.00")


def _rows():
    with all_tenants("test"):
        return d.operator_rows(THIS_MONTH)
