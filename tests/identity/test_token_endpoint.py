"""/oauth/token: client_credentials and RFC 8693 token exchange, and their errors."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from django.conf import settings

from tenants.context import tenant_context
from tenants.identity import services, tokens
from tenants.identity.models import AgentGrant
from tenants.identity.oauth import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS
from tenants.services import Actor
from tests.identity.conftest import claims_of
from tests.tenants.helpers import audit_entries

TOKEN_URL = "/oauth/token"


def post(client, data: dict, **extra):
    """Form-encoded, as RFC 6749 requires (the test client would default to multipart)."""
    return client.post(TOKEN_URL, data=urlencode(data), content_type="application/x-www-form-urlencoded", **extra)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def actor_token_for(client, agent, secret) -> str:
    response = post(client, {"grant_type": "client_credentials", "client_id": agent.client_id, "client_secret": secret})
    assert response.status_code == 200
    return response.json()["access_token"]


def exchange(client, subject_token: str, actor_token: str, **params):
    data = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": TOKEN_TYPE_ACCESS,
        "actor_token": actor_token,
        "actor_token_type": TOKEN_TYPE_ACCESS,
        **params,
    }
    return post(client, {k: v for k, v in data.items() if v is not None})


# --- client_credentials ---------------------------------------------------------------


def test_it_issues_a_client_token_with_basic_auth(client, world, api_client):
    api, secret = api_client
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "members:read tenant:read"
    assert response["Cache-Control"] == "no-store"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == f"client:{api.client_id}"
    assert claims["tenant_id"] == str(world.a.tenant.pk)


def test_it_accepts_client_secret_post_and_narrows_scope(client, api_client):
    api, secret = api_client
    response = post(
        client,
        {
            "grant_type": "client_credentials",
            "client_id": api.client_id,
            "client_secret": secret,
            "scope": "tenant:read",
        },
    )
    assert response.json()["scope"] == "tenant:read"


def test_a_client_asking_for_more_scope_gets_invalid_scope(client, api_client):
    api, secret = api_client
    data = {"grant_type": "client_credentials", "scope": "members:write"}
    response = post(client, data, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_a_client_from_before_the_limit_is_minted_only_what_a_client_can_use(client, world, api_client):
    # Its row still holds scopes no client can use (written before the API clients page
    # offered only the read scopes, and missed by the migration that narrows them).
    from tenants.identity.models import ApiClient

    api, secret = api_client
    with tenant_context(world.a.tenant):
        ApiClient.objects.filter(pk=api.pk).update(scopes=["agents:invoke", "kb:read", "members:write", "tenant:read"])

    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    assert response.status_code == 200
    assert response.json()["scope"] == "tenant:read"
    assert claims_of(response.json()["access_token"])["scope"] == "tenant:read"

    for scope in ("agents:invoke", "kb:read", "members:write"):
        data = {"grant_type": "client_credentials", "scope": f"tenant:read {scope}"}
        response = post(client, data, HTTP_AUTHORIZATION=basic(api.client_id, secret))
        assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")


def test_a_wrong_secret_is_invalid_client(client, api_client):
    api, _ = api_client
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, "nope"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic")


def test_a_revoked_clients_secret_replayed_is_invalid_client(client, world, api_client):
    api, secret = api_client
    with tenant_context(world.a.tenant):
        services.revoke_api_client(Actor(user=world.a.admin, membership=world.a.memberships["admin"]), api)
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_revoked_clients_tokens_stop_at_once(client, world, api_client):
    api, secret = api_client
    token = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret)).json()
    with tenant_context(world.a.tenant):
        services.revoke_api_client(Actor(user=world.a.admin, membership=world.a.memberships["admin"]), api)
    with pytest.raises(tokens.InvalidToken):
        tokens.validate(token["access_token"])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "invalid_client"),
        ({"grant_type": GRANT_TOKEN_EXCHANGE}, "invalid_request"),
        ({"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": "x", "subject_token_type": "weird"}, "invalid_request"),
        (
            {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": "x.y.z", "subject_token_type": TOKEN_TYPE_ACCESS},
            "invalid_grant",
        ),
    ],
)
def test_malformed_requests_get_rfc6749_errors(client, db, data, error):
    response = post(client, data)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "error_description"}


def test_json_bodies_and_get_are_refused_cleanly(client, db):
    assert client.post(TOKEN_URL, data="{}", content_type="application/json").json()["error"] == "invalid_request"
    assert client.get(TOKEN_URL).status_code == 405


def test_the_metadata_names_the_endpoints(client, db):
    body = client.get("/.well-known/oauth-authorization-server").json()
    assert body["issuer"] == settings.TOKEN_ISSUER
    assert body["token_endpoint"].endswith("/oauth/token")
    assert body["jwks_uri"].endswith("/.well-known/jwks.json")
    assert GRANT_TOKEN_EXCHANGE in body["grant_types_supported"]


# --- token exchange -----------------------------------------------------------------


def test_it_exchanges_a_user_token_for_a_narrower_act_on_behalf_token(client, world, agents, user_token):
    agent, secret = agents["allowed"]
    response = exchange(
        client, user_token, actor_token_for(client, agent, secret), audience="agent-runtime", scope="kb:read"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == TOKEN_TYPE_ACCESS
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "kb:read"
    assert body["expires_in"] == 300
    claims = claims_of(body["access_token"])
    assert claims["sub"] == f"user:{world.a.admin.pk}"
    assert claims["tenant_id"] == str(world.a.tenant.pk)
    assert claims["aud"] == "agent-runtime"
    assert claims["act"] == {"sub": agent.subject}
    assert claims["agent_id"] == agent.client_id
    validated = tokens.validate(body["access_token"], audience="agent-runtime")
    assert validated.user == world.a.admin
    assert validated.actor == agent.subject


def test_a_further_hop_nests_the_act_claim(client, world, agents, operator, user_token):
    first, first_secret = agents["allowed"]
    second, second_secret = services.create_shared_agent_identity(operator, name="Sub-agent", allowed_scopes=[])
    with tenant_context(world.a.tenant):
        from tenants.identity.models import AgentGrant

        AgentGrant.objects.create(agent=second)
    hop1 = exchange(client, user_token, actor_token_for(client, first, first_secret), audience="portal-gateway")
    hop2 = exchange(
        client,
        hop1.json()["access_token"],
        actor_token_for(client, second, second_secret),
        audience="portal-gateway",
        scope="kb:read",
    )
    assert hop2.status_code == 200, hop2.content
    assert claims_of(hop2.json()["access_token"])["act"] == {"sub": second.subject, "act": {"sub": first.subject}}


def test_asking_for_wider_scope_than_the_subject_is_invalid_scope(client, world, agents):
    member_token = tokens.issue_user_token(world.a.member, world.a.tenant)
    agent, secret = agents["allowed"]
    response = exchange(client, member_token, actor_token_for(client, agent, secret), scope="members:write")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_an_agent_the_tenant_does_not_allow_is_refused(client, world, agents, user_token):
    agent, secret = agents["stranger"]
    response = exchange(client, user_token, actor_token_for(client, agent, secret), scope="kb:read")
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_an_agent_allowed_in_a_is_refused_for_bs_users(client, world, agents):
    b_token = tokens.issue_user_token(world.b.admin, world.b.tenant)
    agent, secret = agents["allowed"]
    response = exchange(client, b_token, actor_token_for(client, agent, secret))
    assert response.json()["error"] == "unauthorized_client"


def test_an_unknown_audience_is_invalid_target(client, agents, user_token):
    agent, secret = agents["allowed"]
    response = exchange(client, user_token, actor_token_for(client, agent, secret), audience="https://evil.example")
    assert response.json()["error"] == "invalid_target"


@pytest.mark.parametrize("wider", ["tenant-portal-api", "portal-gateway"])
def test_a_runtime_token_cannot_be_exchanged_for_another_audience(client, world, agents, user_token, wider):
    agent, secret = agents["allowed"]
    turn_token = exchange(client, user_token, actor_token_for(client, agent, secret), audience="agent-runtime")
    data = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": turn_token.json()["access_token"],
        "subject_token_type": TOKEN_TYPE_ACCESS,
        "audience": wider,
    }

    response = post(client, data, HTTP_AUTHORIZATION=basic(agent.client_id, secret))

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_target",
        "error_description": "An exchange can only narrow: the subject token was not issued for this audience.",
    }


def test_an_exchanged_token_can_be_exchanged_again_for_its_own_audience(client, world, agents, user_token):
    agent, secret = agents["allowed"]
    turn_token = exchange(client, user_token, actor_token_for(client, agent, secret), audience="agent-runtime")

    response = exchange(
        client, turn_token.json()["access_token"], actor_token_for(client, agent, secret), audience="agent-runtime"
    )

    assert response.status_code == 200, response.content
    assert claims_of(response.json()["access_token"])["aud"] == "agent-runtime"


def test_a_refresh_token_type_cannot_be_requested(client, agents, user_token):
    agent, secret = agents["allowed"]
    response = exchange(
        client,
        user_token,
        actor_token_for(client, agent, secret),
        requested_token_type="urn:ietf:params:oauth:token-type:refresh_token",
    )
    assert response.json()["error"] == "invalid_request"


def test_exchange_without_an_actor_is_refused(client, user_token):
    response = exchange(client, user_token, None)
    assert response.json()["error"] == "invalid_request"


def test_an_agent_authenticating_as_client_is_the_actor(client, world, agents, user_token):
    agent, secret = agents["allowed"]
    data = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": user_token, "subject_token_type": TOKEN_TYPE_ACCESS}
    response = post(client, data, HTTP_AUTHORIZATION=basic(agent.client_id, secret))
    assert response.status_code == 200
    assert claims_of(response.json()["access_token"])["act"] == {"sub": agent.subject}


def test_an_exchanged_token_is_not_accepted_by_the_portal_api(client, agents, user_token):
    agent, secret = agents["allowed"]
    exchanged = exchange(client, user_token, actor_token_for(client, agent, secret)).json()["access_token"]
    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Bearer {exchanged}")
    assert response.status_code == 401


def test_an_agents_own_token_is_no_api_credential(client, agents):
    agent, secret = agents["allowed"]
    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Bearer {actor_token_for(client, agent, secret)}")
    assert response.status_code == 401


def test_disallowing_an_agent_stops_its_exchanged_tokens_at_once(client, world, agents, user_token):
    agent, secret = agents["allowed"]
    exchanged = exchange(client, user_token, actor_token_for(client, agent, secret)).json()["access_token"]
    assert tokens.validate(exchanged, audience="agent-runtime").actor == agent.subject
    with tenant_context(world.a.tenant):
        services.disallow_agent(Actor(user=world.a.admin, membership=world.a.memberships["admin"]), agent)
    with pytest.raises(tokens.InvalidToken):
        tokens.validate(exchanged, audience="agent-runtime")


def test_a_change_an_agent_makes_on_the_portal_api_names_the_agent_in_the_audit_log(client, world, operator):
    # The agent acts for the admin and must not pass for them: whoever reads the log can tell
    # the admin's own changes from those an agent made in their name.
    agent, secret = services.create_shared_agent_identity(
        operator, name="Onboarding agent", allowed_scopes=["members:read", "members:write"]
    )
    with tenant_context(world.a.tenant):
        AgentGrant.objects.create(agent=agent, granted_by=world.a.admin)
    admin_token = tokens.issue_user_token(world.a.admin, world.a.tenant)
    exchanged = exchange(
        client, admin_token, actor_token_for(client, agent, secret), audience="tenant-portal-api", scope="members:write"
    )
    assert exchanged.status_code == 200, exchanged.content

    response = client.post(
        f"/api/v1/tenants/{world.a.tenant.slug}/invitations/",
        {"email": "hired-by-agent@example.test", "role": "member"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {exchanged.json()['access_token']}",
    )

    assert response.status_code == 201, response.content
    [entry] = audit_entries(world.a.tenant, "invitation.created")
    assert entry.actor == world.a.admin
    assert entry.after["acting_agents"] == [agent.subject]


def client_token_with_agent_as_actor(client, agents, api_client) -> str:
    """An API client's token, exchanged by a shared agent to act for it on the portal API."""
    api, api_secret = api_client
    agent, secret = agents["allowed"]
    client_token = post(
        client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, api_secret)
    )
    response = exchange(
        client,
        client_token.json()["access_token"],
        actor_token_for(client, agent, secret),
        audience="tenant-portal-api",
    )
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def test_an_api_clients_exchanged_token_works_on_the_portal_api(client, world, agents, api_client):
    exchanged = client_token_with_agent_as_actor(client, agents, api_client)

    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Bearer {exchanged}")

    assert response.status_code == 200


def test_disallowing_an_agent_stops_an_api_clients_exchanged_tokens_at_once(client, world, agents, api_client):
    exchanged = client_token_with_agent_as_actor(client, agents, api_client)
    agent, _ = agents["allowed"]
    with tenant_context(world.a.tenant):
        services.disallow_agent(Actor(user=world.a.admin, membership=world.a.memberships["admin"]), agent)

    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Bearer {exchanged}")

    assert response.status_code == 401


def test_switching_an_agent_off_stops_an_api_clients_exchanged_tokens_at_once(
    client, world, operator, agents, api_client
):
    exchanged = client_token_with_agent_as_actor(client, agents, api_client)
    agent, _ = agents["allowed"]
    services.set_agent_identity_enabled(operator, agent, enabled=False)

    response = client.get("/api/v1/tenants/", HTTP_AUTHORIZATION=f"Bearer {exchanged}")

    assert response.status_code == 401


def test_a_tier_without_api_access_stops_client_tokens_and_new_grants(client, world, api_client):
    api, secret = api_client
    token = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret)).json()
    world.a.tenant.feature_revocations = ["api_access"]
    world.a.tenant.save(update_fields=["feature_revocations"])
    with pytest.raises(tokens.InvalidToken):
        tokens.validate(token["access_token"])
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))
    assert response.json()["error"] == "unauthorized_client"
