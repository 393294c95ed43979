"""The usage dashboard's charts in a real browser: a tenant with no usage sees "No usage yet"
instead of empty axes, and small counts and latencies get whole, distinct axis ticks (no
"1 ms, 1 ms, 0 ms" or 0.2-turn steps)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.billing.usage_helpers import at, record_usage
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_billing_dashboard import sign_in

pytestmark = pytest.mark.browser

CHARTS = ("chart-usage", "chart-latency", "chart-refusals")
TICKS = "c => Chart.getChart(c).scales[AXIS].ticks.map(t => t.label)"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"e2e-billing-charts-{name}.png"), full_page=True)


def ticks(page, chart: str, axis: str = "y") -> list[str]:
    return page.eval_on_selector(f"canvas[data-chart={chart}]", TICKS.replace("AXIS", repr(axis)))


def test_a_tenant_without_usage_sees_no_usage_yet_instead_of_empty_axes(world, live_server, launch_browser):
    errors: list[str] = []
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, world.a.billing.email)
    page.goto("/t/alpha/billing/")
    expect(page.locator("h1")).to_contain_text("Usage and billing")
    expect(page.locator("canvas[data-chart=chart-refusals]")).to_have_attribute("data-drawn", "1")
    shot(page, "01-no-usage")
    for chart in CHARTS:
        canvas = page.locator(f"canvas[data-chart={chart}]")
        expect(canvas).to_have_attribute("data-drawn", "1")
        expect(canvas).to_be_hidden()
        expect(page.locator(f".chart-box:has(canvas[data-chart={chart}]) .chart-empty")).to_have_text("No usage yet")
    expect(page.locator("[data-variant-for=chart-usage]")).to_be_hidden()  # nothing to switch between
    page.click("section[aria-labelledby=usage-title] summary")  # the numbers are still there, as zeros
    expect(page.locator("section[aria-labelledby=usage-title] table tbody tr").first).to_contain_text("0")
    assert errors == []


def test_small_counts_and_latencies_get_whole_distinct_ticks(world, live_server, launch_browser):
    today = at(timezone.now().astimezone(dt.UTC).date())
    record_usage(world.a.tenant, today, latency_ms=3)
    record_usage(world.a.tenant, today, latency_ms=3, outcome="blocked", input_tokens=0, output_tokens=0, cost="0")
    errors: list[str] = []
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, world.a.billing.email)
    page.goto("/t/alpha/billing/")
    for chart in CHARTS:
        expect(page.locator(f"canvas[data-chart={chart}]")).to_be_visible()
    assert page.locator(".chart-empty").count() == 0

    latency = ticks(page, "chart-latency")
    assert len(latency) == len(set(latency)) > 1, latency
    assert all(label.endswith(" ms") and label[:-3].isdigit() for label in latency), latency

    refusals = ticks(page, "chart-refusals")
    assert refusals == ["0", "1"], refusals

    page.click("[data-variant-for=chart-usage] button[data-variant=turns]")
    turns = ticks(page, "chart-usage")
    assert turns == [str(n) for n in range(len(turns))] and len(turns) > 1, turns
    shot(page, "02-small-counts")
    assert errors == []
