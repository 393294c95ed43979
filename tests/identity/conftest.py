from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from tenants.context import tenant_context
from tenants.identity import keys, services, tokens
from tenants.identity.models import AgentGrant
from tenants.services import Actor
from tests.identity.fake_idp import FakeIdP
from tests.identity.sso_helpers import configure_sso, grant_sso_feature


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    keys.clear_cache()
    yield
    keys.clear_cache()


@pytest.fixture
def idp():
    """A fake OpenID provider on loopback (tests/identity/fake_idp.py)."""
    server = FakeIdP().start()
    yield server
    server.stop()


@pytest.fixture
def alpha_sso(world, idp, settings):
    """Tenant A's tier gets SSO; A's owner connects the fake IdP for alpha.test (verified).

    The IdP is on loopback, so saving it needs SSO_ALLOW_LOOPBACK_ISSUERS (as in
    development); a test that wants production's checks turns it off afterwards.
    """
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = True
    grant_sso_feature(world.a.tenant)
    return configure_sso(world.a, idp)


@pytest.fixture
def agents(world, operator):
    """A shared agent allowed in tenant A (not in B), and one nobody allowed."""
    allowed, allowed_secret = services.create_shared_agent_identity(
        operator, name="Helpdesk agent", allowed_scopes=["tenant:read", "agents:invoke", "kb:read"]
    )
    stranger, stranger_secret = services.create_shared_agent_identity(
        operator, name="Stranger agent", allowed_scopes=["kb:read"]
    )
    with tenant_context(world.a.tenant):
        AgentGrant.objects.create(agent=allowed, granted_by=world.a.admin)
    return {
        "allowed": (allowed, allowed_secret),
        "stranger": (stranger, stranger_secret),
    }


@pytest.fixture
def user_token(world):
    """A's admin's access token (scopes of the admin role)."""
    return tokens.issue_user_token(world.a.admin, world.a.tenant)


@pytest.fixture
def api_client(world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        client, secret = services.create_api_client(actor, name="CI robot", scopes=["tenant:read", "members:read"])
    return client, secret


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(header)}.{b64(claims)}.{b64(signature) if signature else ''}"


def sign_with_our_key(claims: dict, **header) -> str:
    """Signed by our real active key, with whatever header the attacker wants."""
    kid, private_key = keys.signing_key()
    headers = {"kid": kid, "typ": "at+jwt", **header}  # typ=None makes PyJWT drop the header
    return jwt.encode(claims, private_key, algorithm="ES256", headers=headers)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def now() -> int:
    return int(time.time())
