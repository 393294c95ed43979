"""The identity screens of a tenant: API clients and agent identities, through Django's test client."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages

from tenants.context import tenant_context
from tenants.identity import services
from tenants.identity.models import AgentGrant, AgentIdentity, ApiClient, hash_secret
from tenants.services import Actor
from tests import factories
from tests.identity.test_token_endpoint import basic, post
from tests.tenants.helpers import audit_entries, reload


def url(side, path: str = "") -> str:
    return f"/t/{side.tenant.slug}/{path}"


def signed_in(client, user):
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def secret_on_page(response) -> str:
    match = re.search(r'id="client-secret"[^>]*value="([^"]+)"', response.content.decode())
    assert match, "the page shows no secret"
    return match.group(1)


def clients_of(tenant) -> list[ApiClient]:
    with tenant_context(tenant):
        return list(ApiClient.objects.order_by("id"))


def grants_of(tenant) -> set[int]:
    with tenant_context(tenant):
        return set(AgentGrant.objects.values_list("agent_id", flat=True))


def client_token(client, client_id: str, secret: str):
    return post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret))


@pytest.fixture
def shared_agent(operator):
    agent, _ = services.create_shared_agent_identity(operator, name="Helpdesk agent", allowed_scopes=["kb:read"])
    return agent


@pytest.fixture
def own_agent(world):
    """An agent tenant A registered itself (allowed in A at once), with its secret."""
    actor = Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant):
        return services.create_tenant_agent_identity(actor, name="Alpha triage agent", allowed_scopes=["kb:read"])


@pytest.fixture
def b_agent(world):
    actor = Actor(user=world.b.owner, membership=world.b.memberships["owner"])
    with tenant_context(world.b.tenant):
        agent, _ = services.create_tenant_agent_identity(actor, name="Bravo secret agent", allowed_scopes=["kb:read"])
    return agent


# --- API clients: who may see them ----------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_it_shows_the_api_clients_page_to_owners_and_admins(client, world, role):
    response = signed_in(client, world.a.user(role)).get(url(world.a, "api-clients/"))
    assert response.status_code == 200
    assert b'id="api-client-form"' in response.content


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_forbids_the_api_clients_page_to_a_teammate(client, world, role):
    response = signed_in(client, world.a.user(role)).get(url(world.a, "api-clients/"))
    assert response.status_code == 403


def test_it_answers_404_to_the_other_tenants_owner_and_to_an_outsider(client, world):
    assert signed_in(client, world.b.owner).get(url(world.a, "api-clients/")).status_code == 404
    assert signed_in(client, world.outsider).get(url(world.a, "api-clients/")).status_code == 404


def test_it_lists_the_tenants_clients_with_their_details(client, world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        services.create_api_client(actor, name="Nightly export", scopes=["tenant:read", "members:read"])
    b_actor = Actor(user=world.b.admin, membership=world.b.memberships["admin"])
    with tenant_context(world.b.tenant):
        services.create_api_client(b_actor, name="Bravo private robot", scopes=["tenant:read"])

    response = signed_in(client, world.a.owner).get(url(world.a, "api-clients/"))
    page = response.content.decode()
    assert "Nightly export" in page
    assert clients_of(world.a.tenant)[0].client_id in page
    assert "<code>members:read</code>" in page
    assert "Alpha Admin" in page  # created by
    assert "Never" in page  # last used
    assert "Bravo private robot" not in page


# --- API clients: creating one, the secret shown once -------------------------------------------


def test_it_creates_a_client_and_shows_its_secret_once(client, world):
    signed_in(client, world.a.admin)
    response = client.post(url(world.a, "api-clients/new/"), {"name": "CI pipeline", "scopes": ["tenant:read"]})

    assert response.status_code == 200
    secret = secret_on_page(response)
    [created] = clients_of(world.a.tenant)
    assert created.name == "CI pipeline"
    assert created.scopes == ["tenant:read"]
    assert created.created_by == world.a.admin
    assert created.secret_hash == hash_secret(secret)
    assert "no-store" in response["Cache-Control"]
    assert b"only time the secret is shown" in response.content
    assert audit_entries(world.a.tenant, "api_client.created")[0].actor == world.a.admin

    # Never again: neither the list nor the client's page carries it.
    assert secret.encode() not in client.get(url(world.a, "api-clients/")).content
    assert secret.encode() not in client.get(url(world.a, f"api-clients/{created.pk}/")).content


def test_it_gives_a_secret_that_works_at_the_token_endpoint(client, world):
    signed_in(client, world.a.owner)
    response = client.post(url(world.a, "api-clients/new/"), {"name": "Robot", "scopes": ["tenant:read"]})
    [created] = clients_of(world.a.tenant)

    token = client_token(client, created.client_id, secret_on_page(response))

    assert token.status_code == 200
    assert token.json()["scope"] == "tenant:read"


def test_it_offers_only_the_admins_own_scopes_that_a_client_can_use(client, world):
    response = signed_in(client, world.a.admin).get(url(world.a, "api-clients/"))
    page = response.content.decode()
    offered = set(re.findall(r'name="scopes" value="([^"]+)"', page))
    # A client reads; changes and chat need a person (agents act on behalf of members).
    assert offered == {"tenant:read", "members:read", "audit:read", "billing:read", "guardrails:read"}
    assert "members:write" not in offered
    assert "agents:invoke" not in offered
    assert "Nor can it chat with agents, which act on behalf of a member" in page


def test_an_owner_is_not_offered_the_owner_scopes_a_client_cannot_use(client, world):
    response = signed_in(client, world.a.owner).get(url(world.a, "api-clients/"))
    offered = set(re.findall(r'name="scopes" value="([^"]+)"', response.content.decode()))
    assert "members:owners" not in offered  # an owner holds it, but a client cannot use it


def test_it_refuses_a_scope_a_client_cannot_use(client, world):
    signed_in(client, world.a.owner)
    response = client.post(url(world.a, "api-clients/new/"), {"name": "Chatty", "scopes": ["agents:invoke"]})
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert clients_of(world.a.tenant) == []


def test_it_refuses_a_scope_the_admin_does_not_hold(client, world):
    signed_in(client, world.a.admin)
    response = client.post(url(world.a, "api-clients/new/"), {"name": "Too strong", "scopes": ["members:owners"]})
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert clients_of(world.a.tenant) == []


def test_it_asks_for_a_name_and_a_scope(client, world):
    response = signed_in(client, world.a.admin).post(url(world.a, "api-clients/new/"), {"name": "", "scopes": []})
    assert response.status_code == 400
    assert b"This field is required." in response.content
    assert b"Choose at least one scope." in response.content
    assert clients_of(world.a.tenant) == []


def test_it_explains_that_the_tier_has_no_api_access(client, world):
    basic_tier = factories.make_tier("basic-test", default_features=["chat"])
    tenant = factories.make_tenant("charlie", tier=basic_tier, name="Charlie Ltd")
    owner = factories.add_member(tenant, role="owner").user
    signed_in(client, owner)

    page = client.get(f"/t/{tenant.slug}/api-clients/")
    refused = client.post(f"/t/{tenant.slug}/api-clients/new/", {"name": "Robot", "scopes": ["tenant:read"]})

    assert page.status_code == 200
    assert b'id="api-not-in-tier"' in page.content
    assert b"API access is not part of the Basic-Test plan" in page.content
    assert b'id="api-client-form"' not in page.content
    assert refused.status_code == 400
    assert b"API access is not included in the Basic-Test tier." in refused.content
    assert clients_of(tenant) == []


def test_it_shows_how_to_get_a_token_on_the_clients_page(client, world, settings):
    settings.TOKEN_ISSUER = "https://portal.example.com"
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        api, _ = services.create_api_client(actor, name="Export", scopes=["tenant:read", "members:read"])

    response = signed_in(client, world.a.owner).get(url(world.a, f"api-clients/{api.pk}/"))

    page = response.content.decode()
    assert response.status_code == 200
    assert api.client_id in page
    assert "https://portal.example.com/oauth/token" in page
    assert f'-u "{api.client_id}:$CLIENT_SECRET"' in page
    assert "-d grant_type=client_credentials" in page
    assert '-d scope="members:read tenant:read"' in page


def test_it_answers_404_for_another_tenants_client(client, world):
    actor = Actor(user=world.b.admin, membership=world.b.memberships["admin"])
    with tenant_context(world.b.tenant):
        api, _ = services.create_api_client(actor, name="Bravo robot", scopes=["tenant:read"])
    signed_in(client, world.a.owner)
    assert client.get(url(world.a, f"api-clients/{api.pk}/")).status_code == 404
    assert client.post(url(world.a, f"api-clients/{api.pk}/revoke/")).status_code == 404
    assert reload(api).revoked_at is None


# --- API clients: revoking ----------------------------------------------------------------------


def test_it_revokes_a_client_whose_tokens_then_fail(client, world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        api, secret = services.create_api_client(actor, name="Old robot", scopes=["tenant:read"])

    response = signed_in(client, world.a.owner).post(url(world.a, f"api-clients/{api.pk}/revoke/"))

    assert response.status_code == 302
    assert response["Location"] == url(world.a, "api-clients/")
    assert reload(api).revoked_at is not None
    assert audit_entries(world.a.tenant, "api_client.revoked")[0].actor == world.a.owner
    assert client_token(client, api.client_id, secret).status_code == 401


def test_it_says_so_when_a_client_is_already_revoked(client, world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        api, _ = services.create_api_client(actor, name="Robot", scopes=["tenant:read"])
        services.revoke_api_client(actor, api)

    response = signed_in(client, world.a.owner).post(url(world.a, f"api-clients/{api.pk}/revoke/"))

    assert messages_of(response) == ["This client is already revoked."]


def test_it_forbids_a_member_to_revoke(client, world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        api, _ = services.create_api_client(actor, name="Robot", scopes=["tenant:read"])
    response = signed_in(client, world.a.member).post(url(world.a, f"api-clients/{api.pk}/revoke/"))
    assert response.status_code == 403
    assert reload(api).revoked_at is None


# --- agent identities ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_forbids_the_agents_page_to_a_teammate(client, world, role):
    assert signed_in(client, world.a.user(role)).get(url(world.a, "agents/")).status_code == 403


def test_it_lists_shared_agents_and_the_tenants_own_but_not_another_tenants(
    client, world, shared_agent, own_agent, b_agent
):
    response = signed_in(client, world.a.admin).get(url(world.a, "agents/"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Helpdesk agent" in page
    assert "Shared by the platform" in page
    assert "Alpha triage agent" in page
    assert "Your own" in page
    assert "Bravo secret agent" not in page


def test_it_shows_whether_each_agent_may_act_for_the_tenants_users(client, world, shared_agent, own_agent):
    page = signed_in(client, world.a.admin).get(url(world.a, "agents/")).content.decode()
    shared_row = page[page.index(f'data-agent="{shared_agent.client_id}"') :]
    own_row = page[page.index(f'data-agent="{own_agent[0].client_id}"') :]
    assert 'aria-checked="false"' in shared_row[: shared_row.index("</tr>")]
    assert 'aria-checked="true"' in own_row[: own_row.index("</tr>")]


def test_it_allows_and_disallows_a_shared_agent(client, world, shared_agent):
    signed_in(client, world.a.admin)

    allowed = client.post(url(world.a, f"agents/{shared_agent.pk}/allow/"))
    assert allowed.status_code == 302
    assert shared_agent.pk in grants_of(world.a.tenant)
    assert shared_agent.pk not in grants_of(world.b.tenant)
    assert audit_entries(world.a.tenant, "agent.allowed")[0].actor == world.a.admin

    client.post(url(world.a, f"agents/{shared_agent.pk}/disallow/"))
    assert shared_agent.pk not in grants_of(world.a.tenant)
    assert audit_entries(world.a.tenant, "agent.disallowed")[0].actor == world.a.admin


def test_it_answers_404_for_another_tenants_own_agent(client, world, b_agent):
    signed_in(client, world.a.owner)
    for action in ("allow", "disallow", "rotate"):
        assert client.post(url(world.a, f"agents/{b_agent.pk}/{action}/")).status_code == 404
    assert grants_of(world.a.tenant) == set()


def test_it_registers_the_tenants_own_agent_and_shows_its_secret_once(client, world):
    signed_in(client, world.a.owner)
    response = client.post(
        url(world.a, "agents/new/"), {"name": "Invoice agent", "allowed_scopes": ["kb:read", "agents:invoke"]}
    )

    assert response.status_code == 200
    secret = secret_on_page(response)
    agent = AgentIdentity.objects.get(name="Invoice agent")
    assert agent.owner_tenant == world.a.tenant
    assert agent.allowed_scopes == ["agents:invoke", "kb:read"]
    assert agent.secret_hash == hash_secret(secret)
    assert agent.pk in grants_of(world.a.tenant)
    assert "no-store" in response["Cache-Control"]
    assert audit_entries(world.a.tenant, "agent_identity.created")[0].actor == world.a.owner
    assert client_token(client, agent.client_id, secret).status_code == 200


def test_it_rotates_the_tenants_own_agent_secret(client, world, own_agent):
    agent, old_secret = own_agent
    response = signed_in(client, world.a.admin).post(url(world.a, f"agents/{agent.pk}/rotate/"))

    assert response.status_code == 200
    new_secret = secret_on_page(response)
    assert b"The old secret stopped working just now." in response.content
    assert client_token(client, agent.client_id, old_secret).status_code == 401
    assert client_token(client, agent.client_id, new_secret).status_code == 200
    assert audit_entries(world.a.tenant, "agent_identity.rotated")[0].actor == world.a.admin


def test_it_leaves_shared_agents_to_the_operator_to_rotate(client, world, shared_agent):
    world.a.admin.is_staff = True  # even an admin who is also an operator
    world.a.admin.save()
    response = signed_in(client, world.a.admin).post(url(world.a, f"agents/{shared_agent.pk}/rotate/"))
    assert response.status_code == 404
    shared_agent.refresh_from_db()
    assert shared_agent.rotated_at is None


def test_it_offers_agents_only_the_admins_own_scopes(client, world):
    signed_in(client, world.a.admin)
    response = client.post(url(world.a, "agents/new/"), {"name": "Greedy", "allowed_scopes": ["members:owners"]})
    assert response.status_code == 400
    assert not AgentIdentity.objects.filter(name="Greedy").exists()
