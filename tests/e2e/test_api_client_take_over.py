"""An owner takes over an API client paused by its owner's departure, in a real browser: the
client's page says why it is paused, the confirmation says the secret changes, and the new
secret is shown once, works, and the old one no longer does."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import expect

from tenants.context import tenant_context
from tenants.identity import services
from tenants.services import Actor, remove_member
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_billing_dashboard import sign_in
from tests.identity.test_token_endpoint import basic, post

pytestmark = pytest.mark.browser


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"e2e-api-client-take-over-{name}.png"), full_page=True)


def client_credentials(client_id: str, secret: str) -> int:
    return post(Client(), {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret)).status_code


def test_an_owner_takes_over_a_paused_client_and_gets_a_new_secret(world, live_server, launch_browser):
    a = world.a
    with tenant_context(a.tenant):
        api, old_secret = services.create_api_client(
            Actor(user=a.admin, membership=a.memberships["admin"]), name="Nightly export", scopes=["tenant:read"]
        )
        remove_member(Actor(user=a.owner, membership=a.memberships["owner"]), a.memberships["admin"])
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1366, "height": 860}).new_page()
    sign_in(page, a.owner.email)

    page.goto(f"/t/{a.tenant.slug}/api-clients/{api.pk}/")
    expect(page.locator("#client-paused")).to_contain_text("Alpha Admin is no longer a member.")
    expect(page.locator("#client-paused")).to_contain_text("new secret")
    shot(page, "01-paused")
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Take over").click()

    expect(page.locator("h1")).to_have_text("New secret for Nightly export")
    expect(page.locator(".page-sub")).to_contain_text("You now own it")
    shot(page, "02-new-secret")
    assert "new secret" in questions[0] and "same secret" not in questions[0]
    new_secret = page.locator("#client-secret").input_value()
    assert client_credentials(api.client_id, new_secret) == 200
    assert client_credentials(api.client_id, old_secret) == 401

    page.get_by_role("link", name="I have saved the secret").click()
    expect(page.locator(".page-badges")).to_contain_text("Active")
    expect(page.locator("main")).to_contain_text("Alpha Owner")
    assert new_secret not in page.content()
    page.goto(f"/t/{a.tenant.slug}/api-clients/")
    expect(page.locator(f'tr[data-client-id="{api.client_id}"] .badge')).to_have_text("Active")
    shot(page, "03-list")


def test_the_operator_sees_a_tenants_paused_client_and_why(world, operator, live_server, launch_browser):
    a = world.a
    with tenant_context(a.tenant):
        admin = Actor(user=a.admin, membership=a.memberships["admin"])
        api, _ = services.create_api_client(admin, name="Nightly export", scopes=["tenant:read", "members:read"])
        services.create_api_client(
            Actor(user=a.owner, membership=a.memberships["owner"]), name="Billing sync", scopes=["tenant:read"]
        )
        remove_member(Actor(user=a.owner, membership=a.memberships["owner"]), a.memberships["admin"])
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1366, "height": 860}).new_page()
    sign_in(page, operator.email)

    page.goto(f"/operator/tenants/{a.tenant.slug}/")

    row = page.locator(f'tr[data-client-id="{api.client_id}"]')
    expect(row.locator(".badge")).to_have_text("Paused")
    expect(row).to_contain_text("Paused: Alpha Admin is no longer a member.")
    shot(page, "04-operator-tenant")
    page.locator('section[aria-labelledby="clients-title"]').screenshot(
        path=str(SCREENSHOTS / "e2e-api-client-take-over-05-operator-clients.png")
    )
