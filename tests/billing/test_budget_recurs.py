"""A monthly budget recurs: it must hold every month's fee, not only the prorated fee of the
month a tenant was onboarded or moved in. A budget between the two would stop every turn from
the first day of the next month; it is refused, and one already set (or left below the fee by
a move to a pricier tier) is shown on the limits page as the problem it will be. Time moves by
`timezone.now` (as tests/portal/test_dates.py does)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import limits
from billing.models import TenantBudget
from tenants import services as tenant_services
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.services import ServiceError
from tests.billing.helpers import actor, ask
from tests.factories import make_tier

pytestmark = pytest.mark.django_db

URL = "/t/alpha/billing/limits/"
# The tenant is onboarded on 16 March: March bills 16 of its 31 days of the $100 plan.
ONBOARDED = dt.datetime(2026, 3, 16, tzinfo=dt.UTC)
IN_MARCH = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
LATE_IN_MARCH = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)
IN_APRIL = dt.datetime(2026, 4, 2, 12, tzinfo=dt.UTC)


def travel(monkeypatch, moment: dt.datetime) -> None:
    monkeypatch.setattr(timezone, "now", lambda: moment)


@pytest.fixture
def onboarded_in_march(world, monkeypatch):
    Tenant.objects.filter(pk=world.a.tenant.pk).update(created_at=ONBOARDED)
    world.a.tenant.refresh_from_db()
    travel(monkeypatch, IN_MARCH)
    return world.a


def page_text(client) -> str:
    """The limits page as it reads (tags gone, white space collapsed), with its alert ids."""
    body = client.get(URL).content.decode()
    ids = " ".join(re.findall(r'id="(budget-[a-z-]+)"', body))
    return ids + " " + " ".join(re.sub(r"<[^>]+>", "", body).split())


def lowest_budget_offered(client) -> str:
    return re.search(r'name="monthly_budget"[^>]*min="([0-9.]+)"', client.get(URL).content.decode()).group(1)


def test_the_lowest_budget_the_onboarding_month_offers_still_admits_turns_the_month_after(
    client, world, onboarded_in_march, catalogue, runtime, monkeypatch
):
    client.force_login(world.a.admin)
    lowest = lowest_budget_offered(client)
    response = client.post(URL + "budget/", {"monthly_budget": lowest, "soft_alert_percent": "80"})
    assert response.status_code == 302

    travel(monkeypatch, IN_APRIL)
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_a_budget_below_the_full_fee_is_refused_in_the_onboarding_month_too(client, world, onboarded_in_march):
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "60.00", "soft_alert_percent": "80"})
    assert response.status_code == 400
    error = response.context["budget_form"].errors["monthly_budget"][0]
    assert "$100.00" in error and "every month" in error
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match=r"\$100\.00"):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("60.00"), soft_alert_percent=80)
    with tenant_context(world.a.tenant):
        assert not TenantBudget.objects.exists()
        budget = limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("100.00"), soft_alert_percent=80)
    assert budget.monthly_budget == Decimal("100.00")


def test_a_budget_already_below_the_full_fee_is_shown_as_next_months_stop(client, world, onboarded_in_march):
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(tenant=world.a.tenant, monthly_budget=Decimal("60.00"))
    client.force_login(world.a.admin)
    body = page_text(client)
    assert "budget-below-fee-next" in body
    assert "from 1 Apr 2026" in body and "$100.00" in body


def test_the_month_after_a_budget_below_the_fee_stops_every_turn_and_says_so(
    client, world, onboarded_in_march, catalogue, runtime, monkeypatch
):
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(tenant=world.a.tenant, monthly_budget=Decimal("60.00"))
    travel(monkeypatch, IN_APRIL)
    with pytest.raises(limits.LimitExceeded):
        ask(world.a, catalogue.helpdesk)
    client.force_login(world.a.admin)
    body = page_text(client)
    assert "This budget is below the plan's fee" in body


def test_a_budget_a_move_to_a_pricier_tier_left_below_the_fee_is_shown(client, world, operator, monkeypatch):
    travel(monkeypatch, LATE_IN_MARCH)
    pricier = make_tier("pricier", monthly_price=Decimal("300.00"))
    tenant_services.update_tenant(operator, world.a.tenant, tier=pricier)
    # A move no longer leaves a budget below the new fee (tests/billing/test_tier_change_budget.py),
    # but a row from before that check, or a tier whose fee an operator raised, may hold one.
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(tenant=world.a.tenant, monthly_budget=Decimal("150.00"))

    client.force_login(world.a.admin)
    body = page_text(client)
    # March bills 27 days at $100 and 4 at $300 ($125.81): the budget holds this month only.
    assert "budget-below-fee-next" in body
    assert "from 1 Apr 2026" in body and "$300.00" in body
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match=r"\$300\.00"):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("150.00"), soft_alert_percent=80)
