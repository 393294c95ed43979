"""An operator's change of a tier's price never leaves a tenant on that tier with a monthly budget
its own budget form would refuse (a budget is at least the plan's full monthly fee: billing.spend),
as a tenant's move to a dearer tier does not (test_tier_change_budget).

A new fee above the budget cap of tenants on the tier is refused, naming how many and which, and
offers "Also raise those tenants' budget caps to the new fee": ticked, the price and the raises are
saved together, each raise audited in that tenant's log and listed in the operator's message. What
the operator agreed to is judged again at save time: a tenant or an amount it did not cover is
asked again."""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest

from billing import limits, spend
from billing.models import TenantBudget, TierTerms
from tenants import services as tenant_services
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, Tenant, Tier
from tests import factories
from tests.billing.helpers import actor
from tests.billing.test_plan_changes import tier_form

pytestmark = pytest.mark.django_db

URL = "/operator/tiers/team-100/"


def set_cap(tenant, amount: str | None) -> None:
    with tenant_context(tenant):
        budget = TenantBudget.objects.first() or TenantBudget(tenant=tenant)
        budget.monthly_budget = None if amount is None else Decimal(amount)
        budget.save()


def cap(tenant) -> Decimal | None:
    with tenant_context(tenant):
        row = TenantBudget.objects.first()
        return row.monthly_budget if row else None


@pytest.fixture
def team(world):
    """Alpha ($150 cap) and Bravo ($300 cap) on Team at $100 a month; Other ($50 cap) on a $49 plan."""
    tier = factories.make_tier("team-100", name="Team", monthly_price=Decimal("100.00"))
    Tenant.objects.filter(pk__in=[world.a.tenant.pk, world.b.tenant.pk]).update(tier=tier)
    for side in (world.a, world.b):
        side.tenant.refresh_from_db()
    with tenant_context(world.a.tenant):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("150.00"), soft_alert_percent=80)
    with tenant_context(world.b.tenant):
        limits.set_budget(actor(world.b, "owner"), monthly_budget=Decimal("300.00"), soft_alert_percent=80)
    world.other = factories.make_tenant("other", tier=factories.make_tier("basic-49", monthly_price=Decimal("49.00")))
    set_cap(world.other, "50.00")
    world.tier = tier
    return world


def text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def price(tier) -> Decimal:
    return Tier.objects.get(pk=tier.pk).monthly_price


def test_a_price_above_a_tenants_budget_cap_is_refused_naming_the_tenant(client, team, operator):
    client.force_login(operator)

    response = client.post(URL, tier_form(team.tier, monthly_price="199.00"))

    assert response.status_code == 400
    [error] = response.context["form"].errors["monthly_price"]
    assert "1 tenant on Team has a monthly budget cap below the new fee of $199.00" in error
    assert "Alpha Inc ($150.00)" in error
    assert "Bravo" not in error
    page = text(response)
    assert "Also raise those tenants' budget caps to the new fee" in page
    assert price(team.tier) == Decimal("100.00")
    assert not TierTerms.objects.filter(tier_id=team.tier.pk).exists()
    assert (cap(team.a.tenant), cap(team.b.tenant)) == (Decimal("150.00"), Decimal("300.00"))
    assert not AuditLog.unscoped.filter(action="tier.updated").exists()


def test_ticking_the_raise_saves_the_price_and_raises_each_cap_audited_in_its_tenants_log(client, team, operator):
    client.force_login(operator)
    refused = client.post(URL, tier_form(team.tier, monthly_price="199.00"))
    agreed = refused.context["form"]["raise_budgets_for"].value()

    response = client.post(
        URL, tier_form(team.tier, monthly_price="199.00", raise_budgets="on", raise_budgets_for=agreed)
    )

    assert response.status_code == 302
    assert price(team.tier) == Decimal("199.00")
    assert (cap(team.a.tenant), cap(team.b.tenant), cap(team.other)) == (
        Decimal("199.00"),
        Decimal("300.00"),
        Decimal("50.00"),
    )
    with tenant_context(team.a.tenant):
        assert spend.check_tenant_budget(Tenant.objects.get(pk=team.a.tenant.pk), cap(team.a.tenant)) is None
    with all_tenants("test"):
        [raised] = AuditLog.unscoped.filter(action="billing.budget_raised_for_plan")
        assert AuditLog.unscoped.filter(action="tier.updated").count() == 1
    assert (raised.tenant_id, raised.actor, raised.before["monthly_budget"], raised.after["monthly_budget"]) == (
        team.a.tenant.pk,
        operator,
        "150.00",
        "199.00",
    )
    assert raised.after["tier"] == "Team"
    follow = text(client.get("/operator/tiers/"))
    assert "Monthly budget caps raised to the new fee: Alpha Inc ($150.00 → $199.00)." in follow


def test_an_agreement_that_leaves_out_a_tenant_below_the_fee_now_is_asked_again(client, team, operator):
    client.force_login(operator)
    refused = client.post(URL, tier_form(team.tier, monthly_price="199.00"))
    agreed = refused.context["form"]["raise_budgets_for"].value()
    set_cap(team.b.tenant, "120.00")  # lowered meanwhile, within the $100 fee it had then

    response = client.post(
        URL, tier_form(team.tier, monthly_price="199.00", raise_budgets="on", raise_budgets_for=agreed)
    )

    assert response.status_code == 400
    [error] = response.context["form"].errors["monthly_price"]
    assert "2 tenants on Team" in error
    assert "Alpha Inc ($150.00)" in error and "Bravo Inc ($120.00)" in error
    assert price(team.tier) == Decimal("100.00")
    assert (cap(team.a.tenant), cap(team.b.tenant)) == (Decimal("150.00"), Decimal("120.00"))
    assert not AuditLog.unscoped.filter(action="billing.budget_raised_for_plan").exists()


def test_an_agreement_for_another_fee_is_asked_again(client, team, operator):
    client.force_login(operator)
    refused = client.post(URL, tier_form(team.tier, monthly_price="199.00"))
    agreed = refused.context["form"]["raise_budgets_for"].value()

    response = client.post(
        URL, tier_form(team.tier, monthly_price="249.00", raise_budgets="on", raise_budgets_for=agreed)
    )

    assert response.status_code == 400
    assert "below the new fee of $249.00" in response.context["form"].errors["monthly_price"][0]
    assert price(team.tier) == Decimal("100.00")
    assert cap(team.a.tenant) == Decimal("150.00")


def test_the_refusal_names_the_first_few_and_counts_the_rest(client, team, operator):
    for n in range(4):
        extra = factories.make_tenant(f"extra-{n}", name=f"Extra {n}", tier=team.tier)
        set_cap(extra, "110.00")
    client.force_login(operator)

    response = client.post(URL, tier_form(team.tier, monthly_price="199.00"))

    [error] = response.context["form"].errors["monthly_price"]
    assert "5 tenants on Team" in error
    assert "Alpha Inc ($150.00), Extra 0 ($110.00), Extra 1 ($110.00) and 2 more" in error


def test_a_price_the_caps_hold_and_other_edits_need_no_raise(client, team, operator):
    client.force_login(operator)
    assert client.post(URL, tier_form(team.tier, monthly_price="150.00")).status_code == 302
    assert client.post(URL, tier_form(Tier.objects.get(pk=team.tier.pk), requests_per_minute="7")).status_code == 302
    assert price(team.tier) == Decimal("150.00")
    assert not AuditLog.unscoped.filter(action="billing.budget_raised_for_plan").exists()


def test_tenants_without_a_budget_do_not_hold_the_price_back(client, team, operator):
    set_cap(team.a.tenant, None)
    client.force_login(operator)
    assert client.post(URL, tier_form(team.tier, monthly_price="299.00")).status_code == 302
    assert price(team.tier) == Decimal("299.00")


def test_the_service_refuses_the_price_too(team, operator):
    tier = Tier.objects.get(pk=team.tier.pk)
    tier.monthly_price = Decimal("199.00")
    with pytest.raises(tenant_services.BudgetsBelowTierFee, match=r"Alpha Inc \(\$150\.00\)"):
        tenant_services.save_tier(operator, tier)
    assert price(team.tier) == Decimal("100.00")


def test_an_agreement_that_does_not_parse_is_a_form_error_not_a_500(client, team, operator):
    client.force_login(operator)

    response = client.post(
        URL, tier_form(team.tier, monthly_price="199.00", raise_budgets="on", raise_budgets_for="alpha:lots")
    )

    assert response.status_code == 400
    assert "could not be read" in response.context["form"].non_field_errors()[0]
    assert "could not be read" in text(response)
    assert price(team.tier) == Decimal("100.00")


@pytest.mark.parametrize("amount", ["sNaN", "NaN", "Infinity", "-Infinity", "-5", "1e999", "199.001"])
def test_an_agreement_with_a_tampered_amount_is_a_form_error_not_a_500(client, team, operator, amount):
    client.force_login(operator)
    agreed = f"{team.a.tenant.pk}:{amount}"

    response = client.post(
        URL, tier_form(team.tier, monthly_price="199.00", raise_budgets="on", raise_budgets_for=agreed)
    )

    assert response.status_code == 400
    assert "could not be read" in response.context["form"].non_field_errors()[0]
    assert price(team.tier) == Decimal("100.00")
    assert cap(team.a.tenant) == Decimal("150.00")
