"""A tenant suspended while its owner is signed in: they stay signed in, see why, and carry on after."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests import factories

pytestmark = pytest.mark.browser


def sign_in(page, email: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", password)
    page.click("#login-form button[type=submit]")


def test_the_owner_of_a_suspended_tenant_sees_why_and_carries_on_after_reactivation(
    world, operator, live_server, launch_browser, screenshot
):
    browser = launch_browser()
    owner = browser.new_context(base_url=live_server.url).new_page()
    sign_in(owner, world.a.owner.email, factories.PASSWORD)
    expect(owner).to_have_url(f"{live_server.url}/t/alpha/")

    console = browser.new_context(base_url=live_server.url).new_page()
    console.context.add_cookies([])
    sign_in(console, operator.email, factories.PASSWORD)
    console.goto("/operator/tenants/alpha/")
    console.fill("#suspend-form [name=reason]", "unpaid invoice")
    console.once("dialog", lambda dialog: dialog.accept())
    console.click("#suspend-form button[type=submit]")
    expect(console.locator(".flash-success")).to_contain_text("Alpha Inc is suspended.")

    owner.goto("/t/alpha/members/")
    expect(owner.locator("h1")).to_have_text("Alpha Inc is suspended")
    expect(owner.locator(".state-reason")).to_contain_text("unpaid invoice")
    expect(owner.locator(".state-card")).to_contain_text("The provider of this portal suspended Alpha Inc.")
    screenshot(owner, "suspended-owner")
    owner.goto("/")  # home, for someone in one tenant, is that tenant's page
    expect(owner.locator("h1")).to_have_text("Alpha Inc is suspended")

    console.once("dialog", lambda dialog: dialog.accept())
    console.click("form[action='/operator/tenants/alpha/reactivate/'] button[type=submit]")
    expect(console.locator(".flash-success")).to_contain_text("Alpha Inc is active again.")

    owner.goto("/t/alpha/members/")
    expect(owner).to_have_url(f"{live_server.url}/t/alpha/members/")
    expect(owner.locator("#members-table")).to_be_visible()
