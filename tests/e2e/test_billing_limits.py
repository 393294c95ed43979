"""A tenant admin sets the budget and a person's limit; the person then hits the
budget in the chat composer and sees why (402, the reason in the composer)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from billing.accounting import month_start
from billing.models import MonthlyUsage, TenantBudget, ThrottleEvent, UserLimit
from tenants.context import tenant_context
from tests import factories
from tests.agents.helpers import make_catalogue

pytestmark = pytest.mark.browser

SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots" / "billing"


def sign_in(page, email: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"limits-{name}.png"), full_page=True)


def priced_overage(side, *, included: int, price: str) -> None:
    """A $100 plan with `included` tokens, then `price` per 1k tokens of overage."""
    tier = side.tenant.tier
    tier.monthly_price, tier.included_tokens, tier.overage_price_per_1k_tokens = (
        Decimal("100"),
        included,
        Decimal(price),
    )
    tier.save()


def test_an_admin_sets_limits_and_a_member_meets_the_budget(world, live_server, launch_browser, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    make_catalogue(world.a.tenant, world.b.tenant)
    priced_overage(world.a, included=0, price="1.00")
    browser = launch_browser()

    admin = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    sign_in(admin, world.a.admin.email)
    admin.goto("/t/alpha/billing/limits/")
    expect(admin.locator("h1")).to_contain_text("Limits and budget")
    shot(admin, "01-empty")

    admin.fill("[name=monthly_budget]", "-5")
    admin.click("text=Save budget")
    expect(admin.locator(".field-errors")).to_be_visible()
    shot(admin, "02-invalid-budget")

    # The budget caps the bill, which is at least the plan's fee: below it is a form error naming the fee.
    admin.fill("[name=monthly_budget]", "50")
    admin.click("text=Save budget")
    expect(admin.locator(".field-errors")).to_contain_text("monthly fee is $100.00")
    # The form comes back on its own tab: "Limits and budget" is still the current one.
    expect(admin.locator('nav.tabs a[aria-current="page"]')).to_have_text("Limits and budget")
    shot(admin, "02b-budget-below-the-fee")

    admin.fill("[name=monthly_budget]", "100")
    admin.fill("[name=soft_alert_percent]", "75")
    admin.click("text=Save budget")
    # Saved, with the warning that a budget at the fee (no tokens included) refuses every chat from now on.
    expect(admin.locator(".flash-warning")).to_contain_text("Budget saved")

    member_row = admin.locator(f'#people-limits tr[data-email="{world.a.member.email}"]')
    member_row.locator("input[name$=requests_per_minute]").fill("10")
    member_row.locator("input[name$=tokens_per_month]").fill("50000")
    member_row.locator("button", has_text="Save").click()
    expect(admin.locator(".flash-success")).to_contain_text(f"Limits saved for {world.a.member.email}")
    with tenant_context(world.a.tenant):
        assert TenantBudget.objects.get().monthly_budget == Decimal("100.00")
        limit = UserLimit.objects.get(user=world.a.member)
        assert (limit.requests_per_minute, limit.tokens_per_month) == (10, 50000)

    # The member asks; the budget (the fee: no overage) refuses the turn, and the composer says why.
    member = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800}).new_page()
    sign_in(member, world.a.member.email)
    member.goto("/t/alpha/chat/")
    member.locator("#new-conversation button[name=agent]").first.click()
    member.fill("[data-composer-input]", "What is the refund window?")
    with member.expect_response(lambda r: r.url.endswith("/messages/")) as answer:
        member.locator("#composer button[type=submit]").click()
    assert answer.value.status == 402
    expect(member.locator("#composer-error")).to_contain_text("monthly budget")
    shot(member, "03-composer-refused")

    admin.goto("/t/alpha/billing/limits/")
    expect(admin.locator("#refusals")).to_contain_text("Monthly budget")
    shot(admin, "04-with-refusal")
    with tenant_context(world.a.tenant):
        assert ThrottleEvent.objects.filter(kind="budget").count() == 1


def test_a_budget_at_this_months_bill_is_saved_with_a_warning_and_shown_over(world, live_server, launch_browser):
    from tests.billing.usage_helpers import record_usage

    priced_overage(world.a, included=1000, price="0.50")
    # 21,000 tokens: billed $100 + 20,000 × $0.50 / 1k = $110. Roll-ups; the month's counter below.
    record_usage(world.a.tenant, timezone.now(), input_tokens=20_000, output_tokens=1000, cost="12.50")
    with tenant_context(world.a.tenant):
        MonthlyUsage.objects.create(month=month_start(), user_key=0, tokens_used=21_000, cost_used=Decimal("12.50"))
    admin = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    sign_in(admin, world.a.admin.email)
    admin.goto("/t/alpha/billing/limits/")
    admin.fill("[name=monthly_budget]", "110")
    admin.click("text=Save budget")
    expect(admin.locator(".flash-warning")).to_contain_text("already reached")
    expect(admin.locator("#budget-over")).to_contain_text("refused")
    shot(admin, "05-budget-below-spend")
    fill = admin.locator(".gauge.is-danger .gauge-fill")
    assert fill.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(240, 68, 56)"  # danger red, not grey
    admin.goto("/t/alpha/billing/")
    expect(admin.locator(".gauge.is-danger[aria-labelledby=budget-title]")).to_contain_text("Hard stop reached")
    shot(admin, "06-dashboard-over-budget")
