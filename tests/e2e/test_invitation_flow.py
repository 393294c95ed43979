"""An admin invites a newcomer, who joins through the emailed link in another browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tenants.context import tenant_context
from tenants.models import Membership
from tests import factories

pytestmark = pytest.mark.browser

NEWBIE = "newbie@alpha.test"
NEWBIE_PASSWORD = "violet-kettle-orbit-42"


def sign_in(page, email: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", password)
    page.click("#login-form button[type=submit]")


def test_it_lets_an_invited_person_create_an_account_and_join(
    world, live_server, mail_links, mailoutbox, launch_browser, screenshot
):
    browser = launch_browser()

    # The tenant admin invites a newcomer as admin.
    admin_context = browser.new_context(base_url=live_server.url)
    admin = admin_context.new_page()
    sign_in(admin, world.a.admin.email, factories.PASSWORD)
    expect(admin).to_have_url(f"{live_server.url}/t/alpha/")
    screenshot(admin, "01-admin-signed-in")

    admin.goto("/t/alpha/members/")
    admin.fill("#invite-form [name=email]", NEWBIE)
    admin.select_option("#invite-form [name=role]", "admin")
    admin.click("#invite-form button[type=submit]")
    expect(admin.locator(".flash-success")).to_contain_text(f"Invitation sent to {NEWBIE}")
    expect(admin.locator(f'#invitations-table tr[data-email="{NEWBIE}"]')).to_be_visible()
    screenshot(admin, "02-invitation-sent")

    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert email.to == [NEWBIE]
    assert "Alpha Inc" in email.subject
    link = re.search(r"http://\S+/invitations/\S+/", email.body).group(0)
    assert link.startswith(live_server.url)

    # The newcomer, in a browser of their own, opens the link and sets a password.
    newbie_context = browser.new_context()
    newbie = newbie_context.new_page()
    newbie.goto(link)
    expect(newbie.locator("h1")).to_have_text("Join Alpha Inc")
    newbie.fill("#accept-form [name=full_name]", "Nina Newbie")
    newbie.fill("#accept-form [name=password1]", NEWBIE_PASSWORD)
    newbie.fill("#accept-form [name=password2]", NEWBIE_PASSWORD)
    screenshot(newbie, "03-accept-form-filled")
    newbie.click("#accept-form button[type=submit]")
    expect(newbie).to_have_url(f"{live_server.url}/t/alpha/")
    expect(newbie.locator(".flash-success")).to_contain_text("Welcome to Alpha Inc")
    screenshot(newbie, "04-newcomer-on-overview")

    # Back with the admin: the newcomer is a member with the invited role.
    admin.reload()
    role_cell = admin.locator(f'#members-table tr[data-email="{NEWBIE}"] .member-role')
    expect(role_cell).to_have_attribute("data-role", "admin")
    expect(role_cell.locator("select[name=role]")).to_have_value("admin")
    expect(admin.locator(f'#invitations-table tr[data-email="{NEWBIE}"]')).to_have_count(0)
    screenshot(admin, "05-admin-sees-new-member")

    with tenant_context(world.a.tenant):
        assert Membership.objects.get(user__email=NEWBIE).role == "admin"
