"""In a prorated month (a tenant onboarded, or moved to another tier, during it) the limits
follow the month's tier periods too: the bill starts at the month's prorated fee, and a plan
without overage stops at its prorated included tokens (billing.spend.month_plan). The lowest
budget stays the plan's full monthly fee: a budget recurs (tests/billing/test_budget_recurs.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import limits, spend
from billing.accounting import month_start, next_month
from billing.models import TenantBudget
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.services import ServiceError
from tests.billing.helpers import actor, ask

pytestmark = pytest.mark.django_db

URL = "/t/alpha/billing/limits/"


def onboard_at_mid_month(side) -> None:
    """The tenant was onboarded at the running month's midpoint: half the month is billed, so
    the $100 plan's fee is $50.00 and its 1,000 included tokens are 500."""
    start = dt.datetime.combine(month_start(), dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(next_month(month_start()), dt.time.min, tzinfo=dt.UTC)
    Tenant.objects.filter(pk=side.tenant.pk).update(created_at=start + (end - start) / 2)
    side.tenant.refresh_from_db()


def test_the_lowest_budget_in_the_first_month_is_the_full_fee_not_the_prorated_one(client, world):
    onboard_at_mid_month(world.a)
    with tenant_context(world.a.tenant):
        assert spend.monthly_fee(spend.month_plan(world.a.tenant)) == Decimal("50.00")
        budget = limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("100.00"), soft_alert_percent=80)
    assert budget.monthly_budget == Decimal("100.00")
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "110.00", "soft_alert_percent": "80"})
    assert response.status_code == 302
    with tenant_context(world.a.tenant):
        assert TenantBudget.objects.get().monthly_budget == Decimal("110.00")


def test_a_budget_below_the_full_fee_is_refused_naming_that_fee_in_the_first_month(client, world):
    onboard_at_mid_month(world.a)
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "99.99", "soft_alert_percent": "80"})
    assert response.status_code == 400
    assert "$100.00" in response.context["budget_form"].errors["monthly_budget"][0]
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match=r"\$100\.00"):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("60.00"), soft_alert_percent=80)
    # The other tenant's month is whole: its fee is the plan's as well.
    with tenant_context(world.b.tenant), pytest.raises(ServiceError, match=r"\$100\.00"):
        limits.set_budget(actor(world.b, "owner"), monthly_budget=Decimal("99.99"), soft_alert_percent=80)


def test_a_plan_without_overage_stops_at_its_prorated_included_tokens(world, catalogue, runtime):
    tokens, _ = limits.estimate_turn(catalogue.offering, "What is the refund window?")
    tier = world.a.tenant.tier
    # Room for two turns in a whole month, for one in half of it (⌊(2t + 1) / 2⌋ = t).
    tier.included_tokens, tier.overage_allowed = 2 * tokens + 1, False
    tier.save()
    onboard_at_mid_month(world.a)
    assert ask(world.a, catalogue.helpdesk).status == "queued"
    with pytest.raises(limits.LimitExceeded) as caught:
        ask(world.a, catalogue.helpdesk)
    assert caught.value.code == "quota_exceeded"
    assert f"({tokens:,} tokens)" in str(caught.value)


def test_the_dashboard_shows_the_prorated_quota_of_a_plan_without_overage(world):
    from billing import dashboards as d

    tier = world.a.tenant.tier
    tier.overage_allowed = False
    tier.save()
    onboard_at_mid_month(world.a)
    with tenant_context(world.a.tenant):
        outlook = d.month_outlook(world.a.tenant)
    assert (outlook.tokens.limit, outlook.included_tokens) == (Decimal("500"), 500)


def test_the_limits_page_names_the_prorated_fee_and_the_full_fee_as_the_lowest_budget(client, world):
    onboard_at_mid_month(world.a)
    client.force_login(world.a.admin)
    body = client.get(URL).content.decode()
    assert "This month's fee is prorated to $50.00 (you joined or changed plan during it)" in body
    assert "your plan's monthly fee of $100.00 plus token overage" in body
    assert 'min="100.00"' in body
    assert "of the monthly token quota of 500" in " ".join(body.split())
