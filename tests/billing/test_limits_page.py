"""The limits page: who may see and change it, what it saves, and that it audits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.accounting import month_start
from billing.models import MonthlyUsage, TenantBudget, UserLimit
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.portal.test_malformed_input import BAD_FORM_BODIES

pytestmark = pytest.mark.django_db

URL = "/t/alpha/billing/limits/"


def test_admins_set_the_budget_and_it_is_audited(client, world):
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "250.50", "soft_alert_percent": "70"})
    assert response.status_code == 302
    with tenant_context(world.a.tenant):
        budget = TenantBudget.objects.get()
        entry = AuditLog.objects.get(action="billing.budget_set")
    assert (budget.monthly_budget, budget.soft_alert_percent) == (Decimal("250.50"), 70)
    assert entry.after == {"monthly_budget": "250.50", "soft_alert_percent": 70}
    assert entry.actor_id == world.a.admin.pk
    # Empty means no budget.
    client.post(URL + "budget/", {"monthly_budget": "", "soft_alert_percent": "70"})
    with tenant_context(world.a.tenant):
        assert TenantBudget.objects.get().monthly_budget is None


def priced_overage(side, price: str = "0.50") -> None:
    """The tenant's plan: a $100 fee, 1,000 tokens included, then `price` per 1k tokens."""
    tier = side.tenant.tier
    tier.monthly_price, tier.included_tokens, tier.overage_price_per_1k_tokens = Decimal("100.00"), 1000, Decimal(price)
    tier.save()


def used_this_month(side, tokens: int, cost: str = "0.98765") -> None:
    with tenant_context(side.tenant):
        MonthlyUsage.objects.create(month=month_start(), user_key=0, tokens_used=tokens, cost_used=Decimal(cost))


def test_a_budget_at_this_months_bill_is_saved_with_a_warning_and_shown_reached(client, world):
    priced_overage(world.a)
    used_this_month(world.a, 21_000)  # billed $100 + 20,000 × $0.50 / 1k = $110.00
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "110", "soft_alert_percent": "80"}, follow=True)
    assert response.redirect_chain == [(URL, 302)]
    (message,) = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert message[0] == "warning"
    assert "this month's bill ($110.00) has already reached it: every chat is refused" in message[1]
    body = response.content.decode()
    assert 'id="budget-over"' in body and "Budget reached" in body and "gauge is-danger" in body
    with tenant_context(world.a.tenant):
        assert TenantBudget.objects.get().monthly_budget == Decimal("110.00")


def test_a_budget_above_the_bill_is_saved_quietly(client, world):
    priced_overage(world.a)
    used_this_month(world.a, 21_000)
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "150", "soft_alert_percent": "80"}, follow=True)
    assert [(m.level_tag, str(m)) for m in response.context["messages"]] == [("success", "Budget saved.")]
    body = response.content.decode()
    assert 'id="budget-over"' not in body
    # The page says what the budget buys: ⌊$50 × 1000 / $0.50⌋ tokens past the 1,000 included.
    assert "lets 101,000 tokens be used this month" in body


def test_the_limits_page_shows_the_bill_not_the_price_books_cost(client, world):
    priced_overage(world.a)
    used_this_month(world.a, 21_000, cost="0.98765")
    with tenant_context(world.a.tenant):
        MonthlyUsage.objects.filter(user_key=0).update(tokens_reserved=2048, cost_reserved=Decimal("0.54321"))
        TenantBudget.objects.create(monthly_budget=Decimal("200.00"))
    client.force_login(world.a.owner)
    body = client.get(URL).content.decode()
    assert "$110.00" in body and "Plan fee $100.00 + token overage $10.00" in body
    assert "of a budget of $200.00 (55 %)" in body
    for cost in ("0.98765", "0.99", "0.54321", "0.54"):
        assert cost not in body


def test_a_budget_below_the_plans_fee_is_a_form_error_that_names_the_fee(client, world):
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "99.99", "soft_alert_percent": "80"})
    assert response.status_code == 400
    errors = response.context["budget_form"].errors["monthly_budget"]
    assert errors == [
        "A monthly budget caps what your organisation is billed every month, and your plan's monthly fee is "
        "$100.00: "
        "choose at least $100.00, or leave it empty for no budget."
    ]
    assert "$100.00" in response.content.decode()
    with tenant_context(world.a.tenant):
        assert not TenantBudget.objects.exists()
    # At the fee it is accepted.
    assert client.post(URL + "budget/", {"monthly_budget": "100", "soft_alert_percent": "80"}).status_code == 302


def test_the_service_refuses_a_budget_below_the_fee_too(world):
    from billing import limits
    from tenants.services import Actor, ServiceError

    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match=r"monthly fee is \$100\.00"):
        limits.set_budget(
            Actor(user=world.a.owner, membership=world.a.memberships["owner"]),
            monthly_budget=Decimal("50"),
            soft_alert_percent=80,
        )


def test_without_overage_the_page_says_a_budget_adds_nothing(client, world):
    tier = world.a.tenant.tier
    tier.overage_allowed = False
    tier.save()
    client.force_login(world.a.owner)
    body = client.get(URL).content.decode()
    assert "Your plan allows no overage, so the bill never passes the fee: a budget adds nothing" in body


def test_a_budget_of_zero_shows_as_a_hard_stop_on_the_dashboard_not_as_no_budget(client, world):
    with tenant_context(world.a.tenant):
        # Below the fee (the form refuses one now; an older row may hold it): the bill is past it.
        TenantBudget.objects.create(monthly_budget=Decimal("0"))
    client.force_login(world.a.billing)
    body = client.get("/t/alpha/billing/").content.decode()
    assert "Hard stop reached" in body
    assert "No monthly budget is set" not in body


@pytest.mark.parametrize(
    "payload",
    [
        {"monthly_budget": "-1", "soft_alert_percent": "80"},
        {"monthly_budget": "abc", "soft_alert_percent": "80"},
        {"monthly_budget": "150", "soft_alert_percent": "0"},
        {"monthly_budget": "150", "soft_alert_percent": "101"},
        {"monthly_budget": "10", "soft_alert_percent": "80"},
        {"monthly_budget": "1e999", "soft_alert_percent": "80"},
        {},
    ],
)
def test_bad_budget_input_is_a_form_error_not_a_500(client, world, payload):
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", payload)
    assert response.status_code == 400
    assert "field-errors" in response.content.decode()
    with tenant_context(world.a.tenant):
        assert not TenantBudget.objects.exists()


def test_admins_set_and_clear_a_persons_limits(client, world):
    client.force_login(world.a.owner)
    membership = world.a.memberships["member"]
    prefix = f"m{membership.pk}-"
    url = f"{URL}people/{membership.pk}/"
    assert (
        client.post(url, {prefix + "requests_per_minute": "5", prefix + "tokens_per_month": "9000"}).status_code == 302
    )
    with tenant_context(world.a.tenant):
        limit = UserLimit.objects.get()
    assert (limit.user_id, limit.requests_per_minute, limit.tokens_per_month) == (world.a.member.pk, 5, 9000)
    assert client.post(url, {prefix + "requests_per_minute": "0"}).status_code == 400
    assert client.post(url, {prefix + "requests_per_minute": "", prefix + "tokens_per_month": ""}).status_code == 302
    with tenant_context(world.a.tenant):
        assert not UserLimit.objects.exists()
        assert AuditLog.objects.filter(action="billing.user_limit_set").count() == 2


def test_only_owners_change_an_owners_limits(client, world):
    owner = world.a.memberships["owner"]
    url, prefix = f"{URL}people/{owner.pk}/", f"m{owner.pk}-"
    client.force_login(world.a.admin)
    response = client.post(url, {prefix + "requests_per_minute": "1", prefix + "tokens_per_month": "1"})
    assert response.status_code == 400
    assert "Only an owner can change an owner" in response.content.decode()
    page = client.get(URL).content.decode()
    assert f'action="{url}"' not in page  # no form on the owner's row for an admin
    with tenant_context(world.a.tenant):
        assert not UserLimit.objects.exists()
        assert not AuditLog.objects.filter(action="billing.user_limit_set").exists()
    client.force_login(world.a.owner)
    assert client.post(url, {prefix + "tokens_per_month": "500000"}).status_code == 302
    with tenant_context(world.a.tenant):
        assert UserLimit.objects.get().tokens_per_month == 500_000


def test_the_billing_role_sees_the_page_without_forms_and_cannot_post(client, world):
    client.force_login(world.a.billing)
    page = client.get(URL)
    assert page.status_code == 200
    assert "Save budget" not in page.content.decode()
    assert client.post(URL + "budget/", {"monthly_budget": "1", "soft_alert_percent": "80"}).status_code == 403


def test_members_cannot_see_the_page(client, world):
    client.force_login(world.a.member)
    assert client.get(URL).status_code == 403


def test_a_membership_of_another_tenant_is_404(client, world):
    client.force_login(world.a.admin)
    foreign = world.b.memberships["member"]
    response = client.post(f"{URL}people/{foreign.pk}/", {f"m{foreign.pk}-requests_per_minute": "5"})
    assert response.status_code == 404
    assert client.post(f"{URL}people/not-a-number/", {}).status_code == 404


def test_operators_switch_a_tiers_overage_off(client, world, operator):
    from tenants.models import Tier

    client.force_login(operator)
    tier = world.a.tenant.tier
    form = {
        "name": tier.name,
        "slug": tier.slug,
        "monthly_price": "100.00",
        "included_tokens": "1000",
        "overage_price_per_1k_tokens": "0.002",
        "requests_per_minute": "60",
        "tokens_per_minute": "100000",
        "concurrent_sessions": "5",
        "allowed_models": "",
        "default_features": ["chat"],
        "celery_queue": tier.celery_queue,
    }
    assert client.get(f"/operator/tiers/{tier.slug}/").content.decode().count('name="overage_allowed"') == 1
    assert client.post(f"/operator/tiers/{tier.slug}/", form).status_code == 302  # unchecked box: off
    assert Tier.objects.get(pk=tier.pk).overage_allowed is False
    assert client.post(f"/operator/tiers/{tier.slug}/", {**form, "overage_allowed": "on"}).status_code == 302
    assert Tier.objects.get(pk=tier.pk).overage_allowed is True


@pytest.mark.parametrize(("name", "body", "content_type"), BAD_FORM_BODIES)
def test_a_malformed_budget_form_never_fails(client, world, name, body, content_type):
    client.force_login(world.a.owner)
    response = client.generic("POST", URL + "budget/", body, content_type)
    assert response.status_code == 400
    with tenant_context(world.a.tenant):
        assert not TenantBudget.objects.exists()


def _current_tabs(body: str) -> list[str]:
    nav = body.split('<nav class="tabs" aria-label="Usage and billing">', 1)[1].split("</nav>", 1)[0]
    return [
        link.rsplit("</svg>", 1)[-1].split("</a>", 1)[0].strip()
        for link in nav.split("<a ")[1:]
        if 'aria-current="page"' in link
    ]


def test_it_keeps_the_limits_tab_current_when_the_budget_form_comes_back_with_errors(client, world):
    client.force_login(world.a.admin)
    response = client.post(URL + "budget/", {"monthly_budget": "99.99", "soft_alert_percent": "80"})
    assert response.status_code == 400
    assert _current_tabs(response.content.decode()) == ["Limits and budget"]


def test_it_keeps_the_limits_tab_current_when_a_persons_limits_come_back_with_errors(client, world):
    client.force_login(world.a.admin)
    membership = world.a.memberships["member"]
    response = client.post(URL + f"people/{membership.pk}/", {f"m{membership.pk}-requests_per_minute": "0"})
    assert response.status_code == 400
    assert _current_tabs(response.content.decode()) == ["Limits and budget"]
