"""Every main page of each room passes an axe-core audit (WCAG 2.x A/AA and axe's best practices).

The product runs as `make run` runs it, seeded with the demo (tests/e2e/product.py), so the
pages hold what people see: a month of usage, guardrail events, knowledge bases, invoices.
Pages are audited as the owner of Initech, whose Premium tier has every feature (so every
room shows its full page), as the operator, and signed out. axe-core 4.12.1 comes with the
axe-playwright-python package (MPL-2.0) and is injected into each page as it loaded.

Every violation fails, whatever its impact. The serious and critical ones (contrast, links
told apart by colour alone, scroll boxes a keyboard cannot reach) block people outright; the
moderate and minor ones (content outside landmarks, empty table headers) are what makes a
screen reader's page outline and table navigation lie, and they creep back unnoticed unless
a test holds them at zero too. A rule that proves wrong for this product is switched off
below by name, with the reason, not by lowering the bar for all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.conf import settings
from playwright.sync_api import expect

from tenants.management.commands.seed_demo import DEMO_PASSWORD, OPERATOR_EMAIL
from tests.e2e.product import running_product

pytestmark = pytest.mark.browser

SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots" / "accessibility"
OWNER = "owner@initech.example"  # Initech is on Premium: every feature of the portal
TIMEOUT_MS = 20_000  # a turn goes through the filesystem broker, polled once a second

OWNER_PAGES = {
    "overview": "/t/initech/",
    "members": "/t/initech/members/",
    "audit-log": "/t/initech/audit/",
    "security": "/t/initech/security/",
    "sso": "/t/initech/sso/",
    "api-clients": "/t/initech/api-clients/",
    "agent-identities": "/t/initech/agents/",
    "chat-home": "/t/initech/chat/",
    "knowledge": "/t/initech/knowledge/",
    "guardrails": "/t/initech/guardrails/",
    "billing-dashboard": "/t/initech/billing/",
    "billing-events": "/t/initech/billing/events/",
    "billing-invoices": "/t/initech/billing/invoices/",
    "billing-limits": "/t/initech/billing/limits/",
    "two-factor": "/accounts/2fa/",
    "two-factor-activate": "/accounts/2fa/totp/activate/",
    "sessions": "/accounts/sessions/",
}
OPERATOR_PAGES = {
    "operator-organisations": "/",
    "operator-tenants": "/operator/",
    "operator-tenant": "/operator/tenants/acme/",
    "operator-tiers": "/operator/tiers/",
    "operator-tier": "/operator/tiers/premium/",
    "operator-billing": "/operator/billing/",
    "operator-billing-tenant": "/operator/billing/tenants/acme/",
    "operator-invoices": "/operator/billing/invoices/",
    "operator-guardrails": "/operator/guardrails/",
    "operator-audit-log": "/operator/audit/",
    "operator-load": "/operator/load/?window=7d",
    "operator-agent-identities": "/operator/agent-identities/",
}
SIGNED_OUT_PAGES = {
    "sign-in": "/accounts/login/",
    "password-reset": "/accounts/password/reset/",
}
# axe rules switched off for this product, each with its reason. (None so far.)
RULES_OFF: dict[str, str] = {}


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    with running_product(tmp_path_factory.mktemp("product")) as running:
        yield running


# The signed-in cookies of each (product, person), so each person signs in once per module.
# Signing in once per test would be about 31 sign-ins a minute from one address, and allauth
# rightly refuses more than 30 ("login": "30/m/ip"), so the last test could never sign in.
_SIGNED_IN: dict[tuple[str, str], dict] = {}


def browser_page(launch_browser, product, email: str | None):
    browser = launch_browser()
    options = {"base_url": product.url, "viewport": {"width": 1280, "height": 900}}
    if email and (product.url, email) in _SIGNED_IN:
        options["storage_state"] = _SIGNED_IN[product.url, email]
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    if email and "storage_state" not in options:
        page.goto("/accounts/login/")
        page.fill("#id_login", email)
        page.fill("#id_password", DEMO_PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        _SIGNED_IN[product.url, email] = context.storage_state()
    return page


def assert_passes(page, name: str) -> None:
    found = violations(page, name)
    assert found == [], f"axe found on {page.url}:\n" + "\n".join(found)


def violations(page, name: str) -> list[str]:
    """What axe finds on the page as it is now, one line per rule and element; the page's
    screenshot is kept in var/screenshots/accessibility/ for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    options = {"rules": {rule: {"enabled": False} for rule in RULES_OFF}} if RULES_OFF else None
    found = Axe().run(page, options=options).response["violations"]
    return [
        f"{v['id']} [{v['impact']}] {v['help']}: {', '.join(map(str, node['target']))}"
        f" ({node.get('failureSummary', '').splitlines()[-1].strip() if node.get('failureSummary') else ''})"
        for v in found
        for node in v["nodes"]
    ]


def open_page(page, path: str) -> None:
    page.goto(path)
    expect(page.locator("h1").first).to_be_visible()


@pytest.mark.parametrize("name", list(OWNER_PAGES))
def test_a_tenant_owners_page_passes_the_audit(product, launch_browser, name):
    page = browser_page(launch_browser, product, OWNER)
    open_page(page, OWNER_PAGES[name])
    assert_passes(page, name)


def test_a_conversation_with_an_answered_turn_passes_the_audit(product, launch_browser):
    page = browser_page(launch_browser, product, OWNER)
    page.goto("/t/initech/chat/")
    page.locator("#new-conversation button[name=agent]").first.click()
    page.fill("#composer-text", "What is the answer?")
    page.click("#composer button[type=submit]")
    expect(page.locator(".msg-assistant.status-done").last).to_contain_text("the answer is 42", timeout=TIMEOUT_MS)
    page.reload()  # as it is read later, not only as it streamed in
    expect(page.locator(".msg-assistant.status-done").last).to_be_visible()
    assert_passes(page, "conversation")


@pytest.mark.parametrize("name", list(OPERATOR_PAGES))
def test_an_operators_page_passes_the_audit(product, launch_browser, name):
    page = browser_page(launch_browser, product, OPERATOR_EMAIL)
    open_page(page, OPERATOR_PAGES[name])
    assert_passes(page, name)


@pytest.mark.parametrize("name", list(SIGNED_OUT_PAGES))
def test_a_signed_out_page_passes_the_audit(product, launch_browser, name):
    page = browser_page(launch_browser, product, None)
    open_page(page, SIGNED_OUT_PAGES[name])
    assert_passes(page, name)


def test_a_page_with_a_message_after_a_change_passes_the_audit(product, launch_browser):
    """A flash message (here: after saving the budget) is inside the page's landmarks too."""
    page = browser_page(launch_browser, product, OWNER)
    open_page(page, "/t/initech/billing/limits/")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator(".flash")).to_be_visible()
    assert_passes(page, "flash-message")


def test_a_table_wider_than_its_box_is_a_named_region_the_keyboard_scrolls(product, launch_browser):
    page = browser_page(launch_browser, product, OWNER)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: the members table is wider than it
    open_page(page, "/t/initech/members/")
    box = page.locator(".table-wrap:has(#members-table)")
    expect(box).to_have_attribute("role", "region")
    expect(box).to_have_attribute("aria-label", "Members")
    expect(box).to_have_attribute("tabindex", "0")

    box.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('.table-wrap:has(#members-table)').scrollLeft > 0")

    # On a desktop the table fits: no scroll, so no tab stop and no region to announce.
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(box).not_to_have_attribute("tabindex", "0")
    expect(box).not_to_have_attribute("role", "region")
