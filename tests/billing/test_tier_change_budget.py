"""An operator's move of a tenant to another tier never leaves it with a monthly budget its own
budget form would refuse (a budget is at least the plan's full monthly fee: billing.spend).

A move to a plan whose fee is above the tenant's budget is refused with a form error naming the
fee and the cap, and offers "Also raise the budget cap to <fee>": ticked, the move and the
raised budget are saved together, both audited."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from billing import limits, spend
from billing.models import TenantBudget, TierChange
from tenants import services as tenant_services
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, Tenant
from tests.billing.helpers import actor
from tests.factories import make_tier

pytestmark = pytest.mark.django_db

URL = "/operator/tenants/alpha/"


@pytest.fixture
def capped(world):
    """Alpha on a $100 plan with a $150 monthly budget; a $499 plan and a $120 plan to move to."""
    basic = make_tier("basic-100", monthly_price=Decimal("100.00"))
    Tenant.objects.filter(pk=world.a.tenant.pk).update(tier=basic)
    world.a.tenant.refresh_from_db()
    with tenant_context(world.a.tenant):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("150.00"), soft_alert_percent=80)
    world.pricier = make_tier("pro-499", name="Pro", monthly_price=Decimal("499.00"))
    world.cheaper = make_tier("plus-120", name="Plus", monthly_price=Decimal("120.00"))
    return world


def move(tier, **extra) -> dict:
    return {"name": "Alpha Inc", "tier": str(tier.pk), "deployment_model": "pool", "region": "us-east-1"} | extra


def budget(side) -> Decimal | None:
    with tenant_context(side.tenant):
        return TenantBudget.objects.get().monthly_budget


def text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def test_a_move_to_a_plan_whose_fee_is_above_the_budget_is_refused_naming_both(client, capped, operator):
    client.force_login(operator)

    response = client.post(URL, move(capped.pricier))

    assert response.status_code == 400
    [error] = response.context["form"].errors["tier"]
    assert "($150.00) is below the Pro plan's monthly fee ($499.00)" in error
    page = text(response)
    assert "Also raise the budget cap to $499.00" in page
    tenant = Tenant.objects.get(pk=capped.a.tenant.pk)
    assert tenant.tier.slug == "basic-100"
    assert budget(capped.a) == Decimal("150.00")
    with tenant_context(tenant):
        assert not TierChange.objects.exists()
    assert not AuditLog.unscoped.filter(tenant=tenant, action="tenant.tier_changed").exists()


def test_ticking_the_raise_moves_the_tenant_and_raises_its_budget_both_audited(client, capped, operator):
    client.force_login(operator)

    response = client.post(URL, move(capped.pricier, raise_budget="on", raise_budget_to="499.00"))

    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=capped.a.tenant.pk)
    assert tenant.tier == capped.pricier
    assert budget(capped.a) == Decimal("499.00")
    # The budget form takes the budget the move left.
    with tenant_context(tenant):
        assert spend.check_tenant_budget(tenant, budget(capped.a)) is None
    with all_tenants("test"):
        [raised] = AuditLog.unscoped.filter(tenant=tenant, action="billing.budget_raised_for_plan")
        assert AuditLog.unscoped.filter(tenant=tenant, action="tenant.tier_changed").count() == 1
    assert (raised.actor, raised.before["monthly_budget"], raised.after["monthly_budget"]) == (
        operator,
        "150.00",
        "499.00",
    )
    assert raised.after["tier"] == "Pro"
    follow = text(client.get(URL))
    assert "budget cap was raised to $499.00" in follow


def test_a_raise_offered_at_a_fee_that_has_changed_since_is_refused_with_the_new_fee(client, capped, operator):
    client.force_login(operator)
    type(capped.pricier).objects.filter(pk=capped.pricier.pk).update(monthly_price=Decimal("599.00"))

    response = client.post(URL, move(capped.pricier, raise_budget="on", raise_budget_to="499.00"))

    assert response.status_code == 400
    assert "$599.00" in response.context["form"].errors["tier"][0]
    assert "Also raise the budget cap to $599.00" in text(response)
    assert Tenant.objects.get(pk=capped.a.tenant.pk).tier.slug == "basic-100"
    assert budget(capped.a) == Decimal("150.00")


def test_a_move_the_budget_holds_needs_no_raise(client, capped, operator):
    client.force_login(operator)
    response = client.post(URL, move(capped.cheaper))
    assert response.status_code == 302
    assert Tenant.objects.get(pk=capped.a.tenant.pk).tier == capped.cheaper
    assert budget(capped.a) == Decimal("150.00")
    assert not AuditLog.unscoped.filter(action="billing.budget_raised_for_plan").exists()


def test_a_tenant_without_a_budget_moves_freely(client, world, operator):
    pricier = make_tier("pro-499", monthly_price=Decimal("499.00"))
    client.force_login(operator)
    assert client.post(URL, move(pricier)).status_code == 302
    assert Tenant.objects.get(pk=world.a.tenant.pk).tier == pricier


def test_the_service_refuses_the_move_too(capped, operator):
    with pytest.raises(tenant_services.ServiceError, match=r"\$499\.00"):
        tenant_services.update_tenant(operator, capped.a.tenant, tier=capped.pricier)
    assert Tenant.objects.get(pk=capped.a.tenant.pk).tier.slug == "basic-100"


def test_the_budget_service_judges_the_plan_as_stored_not_as_the_request_found_it(capped):
    """The admin's request loaded the tenant on the $100 plan; the operator's move committed since."""
    as_the_request_found_it = Tenant.objects.select_related("tier").get(pk=capped.a.tenant.pk)
    Tenant.objects.filter(pk=capped.a.tenant.pk).update(tier=capped.pricier)
    with tenant_context(as_the_request_found_it):
        with pytest.raises(tenant_services.ServiceError, match=r"\$499\.00"):
            limits.set_budget(actor(capped.a, "owner"), monthly_budget=Decimal("200.00"), soft_alert_percent=80)
    assert budget(capped.a) == Decimal("150.00")
