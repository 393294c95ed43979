"""Helpers for the SSO tests: switch the feature on, configure a tenant's IdP, sign in through it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from allauth.socialaccount.models import SocialAccount

from tenants.context import tenant_context
from tenants.identity import sso
from tenants.identity.models import SSOConnection
from tenants.models import Tenant, User
from tests.factories import Side
from tests.identity.fake_idp import FakeIdP
from tests.tenants.helpers import actor


def grant_sso_feature(tenant: Tenant) -> None:
    tenant.feature_grants = [*tenant.feature_grants, "sso"]
    tenant.save(update_fields=["feature_grants"])


def configure_sso(side: Side, idp: FakeIdP, *, role: str = "owner", verified: bool = True, **changes) -> SSOConnection:
    """The tenant's SSO connection, saved by its admin; with `verified`, its domains then
    proved (through the operator's check: the DNS check has tests of its own)."""
    fields = {
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "domains": [f"{side.tenant.slug}.test"],
        "default_role": "member",
        "enforced": False,
        "enabled": True,
    }
    fields.update(changes)
    with tenant_context(side.tenant):
        connection = sso.save_sso_connection(actor(side, role), **fields)
    if verified:
        for domain in sso.domains_of(connection):
            sso.operator_verify_domain(side.tenant, domain, actor=None)
        connection._prefetched_objects_cache = {}
    return connection


def start_sign_in(client, email: str) -> str:
    """Type the email on the sign-in page and choose "Continue with single sign-on": the IdP URL."""
    response = client.post("/accounts/sso/", {"login": email, "password": ""})
    assert response.status_code == 302, response.content.decode()[:500]
    return response["Location"]


def finish_sign_in(client, idp: FakeIdP, authorize_url: str, *, callback_path: str | None = None):
    """The browser at the IdP (not followed automatically), then back at the portal's callback."""
    back = urlsplit(idp.visit(authorize_url))
    assert back.netloc == "testserver"
    return client.get(callback_path or back.path, parse_qs(back.query))


def sign_in_via_sso(client, idp: FakeIdP, email: str):
    return finish_sign_in(client, idp, start_sign_in(client, email))


def signed_in_user(client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.filter(pk=user_id).first() if user_id else None


def social_accounts(provider_id: str) -> list[tuple[str, str]]:
    return sorted(SocialAccount.objects.filter(provider=provider_id).values_list("uid", "user__email"))
