"""Two-factor authentication: the tenant's "members must use it" rule, setting it up through
allauth's own views, and the second sign-in step (authenticator code or recovery code)."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client

from tenants.context import tenant_context
from tenants.identity import services
from tenants.identity.mfa import has_totp
from tenants.models import Tenant
from tenants.services import Actor
from tests import factories
from tests.identity.mfa_helpers import (
    give_totp,
    reauthenticate,
    recovery_codes,
    sign_in_with_password,
    totp_code,
    wrong_code,
)
from tests.identity.test_token_endpoint import basic, post
from tests.tenants.helpers import audit_entries

ACTIVATE = "/accounts/2fa/totp/activate/"
AUTHENTICATE = "/accounts/2fa/authenticate/"


@pytest.fixture(autouse=True)
def _fresh_cache():
    # allauth remembers used TOTP codes and failed attempts in the cache; user ids repeat across tests.
    cache.clear()
    yield
    cache.clear()


def require_mfa(tenant):
    Tenant.objects.filter(pk=tenant.pk).update(require_mfa=True)


def signed_in(client, user):
    client.force_login(user)
    return client


def set_up_totp_through_allauth(client, user) -> str:
    """What a person does in the browser: confirm the password, scan, type the code."""
    response = client.get(ACTIVATE)
    if response.status_code == 302 and "/reauthenticate/" in response["Location"]:
        client.post(response["Location"], {"password": "correct-horse-battery-staple"})
        response = client.get(ACTIVATE)
    assert response.status_code == 200
    secret = response.context["form"].secret
    done = client.post(ACTIVATE, {"code": totp_code(secret)})
    assert done.status_code == 302, done.content
    assert done["Location"] == "/accounts/2fa/recovery-codes/"
    return secret


# --- the tenant's requirement -------------------------------------------------------------------


def test_it_sends_a_member_without_an_authenticator_app_to_set_one_up(client, world):
    require_mfa(world.a.tenant)
    response = signed_in(client, world.a.member).get("/t/alpha/")

    assert response.status_code == 302
    assert response["Location"] == ACTIVATE
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Alpha Inc requires two-factor authentication. Set up an authenticator app to continue."
    ]


@pytest.mark.parametrize("path", ["members/", "api-clients/", "agents/", "security/", "audit/"])
def test_it_guards_every_page_of_the_tenant(client, world, path):
    require_mfa(world.a.tenant)
    response = signed_in(client, world.a.owner).get(f"/t/alpha/{path}")
    assert response.status_code == 302
    assert response["Location"] == ACTIVATE


def test_it_answers_scripts_with_problem_json(client, world):
    require_mfa(world.a.tenant)
    response = signed_in(client, world.a.member).get("/t/alpha/", HTTP_ACCEPT="application/json")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["reason"] == "mfa_required"


def test_it_sends_htmx_requests_to_the_setup_page_as_a_whole(client, world):
    require_mfa(world.a.tenant)
    response = signed_in(client, world.a.member).get("/t/alpha/", HTTP_HX_REQUEST="true")
    assert response["HX-Redirect"] == ACTIVATE


def test_it_refuses_the_api_with_session_sign_in(client, world):
    require_mfa(world.a.tenant)
    response = signed_in(client, world.a.admin).get("/api/v1/tenants/alpha/members/")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["reason"] == "mfa_required"
    assert "Alpha Inc requires two-factor authentication" in body["detail"]


def test_it_leaves_api_clients_alone(client, world):
    require_mfa(world.a.tenant)
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        api, secret = services.create_api_client(actor, name="Robot", scopes=["members:read"])
    token = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    access = token.json()["access_token"]

    response = Client().get("/api/v1/tenants/alpha/members/", HTTP_AUTHORIZATION=f"Bearer {access}")

    assert response.status_code == 200


def test_it_lets_a_member_with_an_authenticator_app_in(client, world):
    require_mfa(world.a.tenant)
    give_totp(world.a.member)
    assert signed_in(client, world.a.member).get("/t/alpha/").status_code == 200


def test_it_does_not_touch_a_tenant_that_does_not_require_it(client, world):
    require_mfa(world.a.tenant)
    assert signed_in(client, world.b.member).get("/t/bravo/").status_code == 200


def test_it_applies_per_tenant_to_someone_in_two_tenants(client, world):
    require_mfa(world.a.tenant)
    both = world.b.member
    factories.add_member(world.a.tenant, both)
    signed_in(client, both)
    assert client.get("/t/bravo/").status_code == 200
    assert client.get("/t/alpha/")["Location"] == ACTIVATE


def test_it_still_answers_404_to_a_non_member_of_a_tenant_requiring_it(client, world):
    require_mfa(world.a.tenant)
    assert signed_in(client, world.b.owner).get("/t/alpha/").status_code == 404


# --- setting it up through allauth ------------------------------------------------------------------


def test_it_lets_the_member_in_once_an_app_is_set_up_through_allauth(client, world):
    require_mfa(world.a.tenant)
    sign_in_with_password(client, world.a.member)
    assert client.get("/t/alpha/")["Location"] == ACTIVATE  # where they were going is remembered

    set_up_totp_through_allauth(client, world.a.member)

    assert has_totp(world.a.member)
    codes_page = client.get("/accounts/2fa/recovery-codes/")
    assert b'href="/t/alpha/"' in codes_page.content  # "I have saved them — continue"
    assert client.get("/t/alpha/").status_code == 200


def test_it_stores_the_authenticator_secret_encrypted(world):
    secret = give_totp(world.a.member)
    stored = Authenticator.objects.get(user=world.a.member, type=Authenticator.Type.TOTP).data["secret"]
    assert secret not in stored


def test_it_refuses_a_wrong_code_when_setting_up(client, world):
    sign_in_with_password(client, world.a.member)
    response = client.get(ACTIVATE)
    if response.status_code == 302:
        client.post(response["Location"], {"password": "correct-horse-battery-staple"})
        response = client.get(ACTIVATE)
    secret = response.context["form"].secret

    refused = client.post(ACTIVATE, {"code": wrong_code(secret)})

    assert refused.status_code == 200
    assert b"Incorrect code." in refused.content
    assert not has_totp(world.a.member)


def test_it_will_not_turn_off_the_app_while_a_tenant_requires_it(client, world):
    give_totp(world.a.member)
    require_mfa(world.a.tenant)
    client.force_login(world.a.member)
    reauthenticate(client)

    page = client.get("/accounts/2fa/totp/deactivate/")
    refused = client.post("/accounts/2fa/totp/deactivate/")

    assert b"An organisation you belong to requires two-factor authentication" in page.content
    assert b"An organisation you belong to requires two-factor authentication" in refused.content
    assert has_totp(world.a.member)


def test_it_lets_someone_turn_off_the_app_when_no_tenant_requires_it(client, world):
    give_totp(world.a.member)
    client.force_login(world.a.member)
    reauthenticate(client)

    response = client.post("/accounts/2fa/totp/deactivate/")

    assert response.status_code == 302
    assert not has_totp(world.a.member)


# --- signing in with a second step ------------------------------------------------------------------


def test_it_asks_for_the_code_after_the_password(client, world):
    secret = give_totp(world.a.member)

    response = sign_in_with_password(client, world.a.member)

    assert response.status_code == 302
    assert response["Location"] == AUTHENTICATE
    assert client.get("/t/alpha/").status_code == 302  # not signed in yet
    assert client.get("/t/alpha/")["Location"].startswith("/accounts/login/")

    done = client.post(AUTHENTICATE, {"code": totp_code(secret)})

    assert done.status_code == 302
    assert client.get("/t/alpha/").status_code == 200


def test_it_refuses_a_wrong_code_at_sign_in(client, world):
    secret = give_totp(world.a.member)
    sign_in_with_password(client, world.a.member)

    response = client.post(AUTHENTICATE, {"code": wrong_code(secret)})

    assert response.status_code == 200
    assert b"Incorrect code." in response.content
    assert client.get("/t/alpha/")["Location"].startswith("/accounts/login/")


def test_it_accepts_a_recovery_code_once(world):
    give_totp(world.a.member)
    code = recovery_codes(world.a.member)[0]

    first = Client()
    sign_in_with_password(first, world.a.member)
    assert first.post(AUTHENTICATE, {"code": code}).status_code == 302
    assert first.get("/t/alpha/").status_code == 200
    assert code not in recovery_codes(world.a.member)

    second = Client()
    sign_in_with_password(second, world.a.member)
    reused = second.post(AUTHENTICATE, {"code": code})
    assert reused.status_code == 200
    assert b"Incorrect code." in reused.content
    assert second.get("/t/alpha/")["Location"].startswith("/accounts/login/")


# --- the setting ------------------------------------------------------------------------------------


def test_it_lets_an_owner_who_uses_an_app_require_it(client, world):
    give_totp(world.a.owner)
    response = signed_in(client, world.a.owner).post("/t/alpha/security/", {"require_mfa": "on"})

    assert response.status_code == 302
    assert Tenant.objects.get(pk=world.a.tenant.pk).require_mfa
    [entry] = audit_entries(world.a.tenant, "tenant.mfa_required")
    assert entry.actor == world.a.owner
    assert entry.before == {"require_mfa": False}
    assert entry.after == {"require_mfa": True}


def test_it_asks_the_admin_to_set_up_their_own_app_first(client, world):
    response = signed_in(client, world.a.admin).post("/t/alpha/security/", {"require_mfa": "on"})

    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Set up two-factor authentication for your own account first."
    ]
    assert not Tenant.objects.get(pk=world.a.tenant.pk).require_mfa
    assert audit_entries(world.a.tenant, "tenant.mfa_required") == []


def test_it_makes_it_optional_again(client, world):
    give_totp(world.a.admin)
    require_mfa(world.a.tenant)
    signed_in(client, world.a.admin).post("/t/alpha/security/", {"require_mfa": ""})
    assert not Tenant.objects.get(pk=world.a.tenant.pk).require_mfa
    assert audit_entries(world.a.tenant, "tenant.mfa_optional")[0].actor == world.a.admin


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_forbids_the_setting_to_a_teammate(client, world, role):
    user = world.a.user(role)
    give_totp(user)
    signed_in(client, user)
    assert client.get("/t/alpha/security/").status_code == 403
    assert client.post("/t/alpha/security/", {"require_mfa": "on"}).status_code == 403
    assert not Tenant.objects.get(pk=world.a.tenant.pk).require_mfa


def test_it_shows_who_uses_an_app(client, world):
    give_totp(world.a.owner)
    page = signed_in(client, world.a.owner).get("/t/alpha/security/").content.decode()
    owner_row = page[page.index('data-email="owner@alpha.test"') :]
    member_row = page[page.index('data-email="member@alpha.test"') :]
    assert "Authenticator app" in owner_row[: owner_row.index("</tr>")]
    assert "Not set up" in member_row[: member_row.index("</tr>")]
    assert "bravo.test" not in page
