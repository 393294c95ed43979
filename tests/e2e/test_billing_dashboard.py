"""A billing admin reads the usage dashboard in a real browser: the charts draw, the metric
switch redraws them, and the same numbers are in the table behind each chart; the operator
reads the margin table and sorts it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests import factories
from tests.billing.usage_helpers import at, record_usage

pytestmark = pytest.mark.browser


def sign_in(page, email: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")


def test_the_billing_role_reads_charts_and_the_operator_sorts_margins(world, operator, live_server, launch_browser):
    today = timezone.now().astimezone(dt.UTC).date()
    for offset in range(10):
        day = at(today - dt.timedelta(days=offset))
        record_usage(world.a.tenant, day, user=world.a.member, input_tokens=1000 + offset)
    record_usage(world.b.tenant, at(today), input_tokens=5, cost="9")
    browser = launch_browser()
    errors: list[str] = []

    page = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, world.a.billing.email)
    page.goto("/t/alpha/billing/")
    expect(page.locator("h1")).to_contain_text("Usage and billing")
    usage = page.locator("canvas[data-chart=chart-usage]")
    expect(usage).to_have_attribute("data-drawn", "1")
    assert page.locator("canvas[data-chart]").count() == 3
    assert page.eval_on_selector("canvas[data-chart=chart-usage]", "c => Chart.getChart(c).data.datasets.length") == 2

    # The price book's cost is the provider's: a tenant's chart switches between tokens and turns only.
    assert page.locator("[data-variant-for=chart-usage] button[data-variant=cost]").count() == 0
    page.click("[data-variant-for=chart-usage] button[data-variant=turns]")
    expect(page.locator("[data-variant-for=chart-usage] button[data-variant=turns]")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(usage).to_have_attribute("aria-label", "Turns per day: 10 in total.")
    assert page.eval_on_selector("canvas[data-chart=chart-usage]", "c => Chart.getChart(c).data.datasets[0].label") == (
        "Turns"
    )

    page.click("section[aria-labelledby=usage-title] summary")
    first_row = page.locator("section[aria-labelledby=usage-title] table tbody tr").last
    expect(first_row).to_contain_text("1,000")  # today's input tokens, in the table behind the chart
    assert errors == []

    staff = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    sign_in(staff, operator.email)
    staff.goto("/operator/billing/?sort=name&dir=asc")
    expect(staff.locator("#billing-table tbody tr")).to_have_count(2)
    staff.click("#billing-table th a.sort:has-text('Cost')")
    expect(staff.locator("#billing-table tbody tr").first).to_have_attribute("data-slug", "bravo")
    # The operator's drill-down into a tenant keeps the cost variant of the same chart.
    staff.goto("/operator/billing/tenants/alpha/?range=30d")
    staff.click("[data-variant-for=chart-usage] button[data-variant=cost]")
    expect(staff.locator("canvas[data-chart=chart-usage]")).to_have_attribute(
        "aria-label", "Cost per day: $0.10 in total."
    )
