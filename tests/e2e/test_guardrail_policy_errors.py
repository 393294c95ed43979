"""A tenant admin saves an invalid guardrail policy in a real browser: the page opens on a
summary of every problem, and each entry takes them to its field, ~3,000 px further down."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_billing_dashboard import sign_in
from tests.guardrails.conftest import grant_custom_guardrails

pytestmark = pytest.mark.browser


def test_an_invalid_policy_opens_on_a_summary_that_links_to_each_field(world, live_server, launch_browser):
    grant_custom_guardrails(world.a.tenant)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1366, "height": 900}).new_page()
    sign_in(page, world.a.admin.email)
    page.goto("/t/alpha/guardrails/")
    page.fill("#id_json_schema", '{"type": "object",')
    page.fill("#id_custom_entities", "badge | redact | B-(\\d{4}")
    page.click("#override button[type=submit]")

    summary = page.locator("#error-summary")
    expect(summary).to_be_in_viewport()
    expect(summary).to_contain_text("2 problems")
    page.screenshot(path=str(SCREENSHOTS / "e2e-guardrails-invalid-viewport.png"))

    summary.get_by_role("link", name="Custom entities").click()
    expect(page.locator("#id_custom_entities_field")).to_be_in_viewport()
    expect(page.locator("#id_custom_entities_field")).to_contain_text("Line 1 (pattern)")
