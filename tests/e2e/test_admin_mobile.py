"""The tenant admin's pages on a phone (390 × 844, an iPhone's viewport) and on a desktop.

On a phone nothing may make the page itself wider than the screen: wide tables scroll
sideways inside their own box, and the navigation folds into a menu. Every page is
also photographed at both widths (var/screenshots/admin/) for a person to look at.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from billing import invoices as inv
from billing.accounting import month_start
from billing.models import LimitKind
from tenants import audit
from tenants.context import tenant_context
from tests import factories
from tests.agents.helpers import make_catalogue, make_turn
from tests.billing.usage_helpers import at, record_throttle, record_usage

pytestmark = pytest.mark.browser

SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots" / "admin"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

PAGES = {
    "overview": "/t/alpha/",
    "members": "/t/alpha/members/",
    "audit-log": "/t/alpha/audit/",
    "billing-dashboard": "/t/alpha/billing/",
    "billing-events": "/t/alpha/billing/events/",
    "invoices": "/t/alpha/billing/invoices/",
    "limits": "/t/alpha/billing/limits/",
}


def sign_in(page, email: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def overflow(page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: it fits)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.fixture
def busy_tenant(world):
    """Alpha with what makes its admin pages wide: usage, refusals, an invoice, a pending
    invitation with a long address, audit entries with long targets and changes."""
    today = timezone.now().astimezone(dt.UTC).date()
    for offset in range(8):
        record_usage(world.a.tenant, at(today - dt.timedelta(days=offset)), user=world.a.member, tool_calls=2)
    record_throttle(world.a.tenant, at(today), user=world.a.member, kind=LimitKind.CONCURRENCY)
    record_throttle(world.a.tenant, at(today), user=world.a.member, kind=LimitKind.USER_TOKENS)
    with tenant_context(world.a.tenant):
        inv.draft_invoice(world.a.tenant, month_start(today))
        factories.make_invitation(
            world.a.tenant, "a.rather.long.address.for.a.new.colleague@subsidiary.alpha.test", invited_by=world.a.owner
        )
        for n in range(3):
            audit.record(
                "membership.role_changed",
                actor=world.a.owner,
                tenant=world.a.tenant,
                target_repr=f"someone-with-a-long-address-{n}@alpha.test",
                before={"role": "member", "note": "x" * 60},
                after={"role": "admin", "note": "y" * 60},
                ip="2001:db8:85a3::8a2e:370:7334",
            )
    return world


def test_an_admins_pages_fit_a_phone_and_the_nav_folds_into_a_menu(busy_tenant, live_server, launch_browser):
    world = busy_tenant
    browser = launch_browser()

    phone = browser.new_context(base_url=live_server.url, viewport=PHONE, device_scale_factor=2).new_page()
    phone.goto("/accounts/login/")
    shot(phone, "sign-in-390")
    too_wide = {"sign-in": overflow(phone)} if overflow(phone) > 0 else {}
    sign_in(phone, world.a.owner.email)
    for name, path in PAGES.items():
        phone.goto(path)
        expect(phone.locator("h1")).to_be_visible()
        shot(phone, f"{name}-390")
        if overflow(phone) > 0:
            too_wide[name] = overflow(phone)
    assert too_wide == {}, f"wider than a 390 px screen (by px): {too_wide}"

    # The navigation is one "Menu" button on a phone; it opens to every section.
    phone.goto(PAGES["members"])
    menu = phone.locator(".sidebar details.nav-menu")
    nav_link = phone.locator(".nav a", has_text="Audit log")
    expect(nav_link).to_be_hidden()
    menu.locator("summary").click()
    expect(nav_link).to_be_visible()
    shot(phone, "nav-open-390")
    assert overflow(phone) <= 0
    nav_link.click()
    expect(phone.locator("h1")).to_have_text("Audit log")

    # A wide table scrolls inside its own box, not the page.
    phone.goto(PAGES["audit-log"])
    table_box = phone.locator("#audit-table").locator("xpath=..")
    assert table_box.evaluate("el => el.scrollWidth > el.clientWidth")
    assert overflow(phone) <= 0

    desktop = browser.new_context(base_url=live_server.url, viewport=DESKTOP).new_page()
    sign_in(desktop, world.a.owner.email)
    for name, path in PAGES.items():
        desktop.goto(path)
        expect(desktop.locator("h1")).to_be_visible()
        # On a desktop the sidebar shows every link at once, no menu to open.
        expect(desktop.locator(".nav a", has_text="Members")).to_be_visible()
        expect(desktop.locator(".nav-menu")).to_be_hidden()
        shot(desktop, f"{name}-1280")
        assert overflow(desktop) <= 0, name


def test_a_conversation_fits_a_phone_with_its_actions_wrapped(world, live_server, launch_browser):
    """Rename, Delete and New conversation sit in one row on a desktop; on a phone that row was
    wider than the screen and dragged the whole page sideways."""
    catalogue = make_catalogue(world.a.tenant)
    conversation, _, _ = make_turn(
        world.a.tenant, world.a.owner, catalogue.helpdesk, "How many days do customers have to return a product?"
    )
    phone = launch_browser().new_context(base_url=live_server.url, viewport=PHONE).new_page()
    sign_in(phone, world.a.owner.email)
    phone.goto(f"/t/alpha/chat/{conversation.pk}/")
    expect(phone.locator("#chat-title")).to_be_visible()
    shot(phone, "conversation-390")
    assert overflow(phone) <= 0
    new = phone.locator(".chat-actions button", has_text="New conversation")
    box = new.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
