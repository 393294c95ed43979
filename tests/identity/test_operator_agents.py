"""The operator console's agent identities: list, create shared agents, rotate, disable and enable."""

from __future__ import annotations

import re

import pytest

from tenants.context import all_tenants, tenant_context
from tenants.identity import services
from tenants.identity.models import AgentGrant, AgentIdentity, hash_secret
from tenants.services import Actor
from tests.identity.test_token_endpoint import basic, post
from tests.tenants.helpers import audit_entries, platform_audit_entries

PAGE = "/operator/agent-identities/"


def secret_on_page(response) -> str:
    return re.search(r'id="client-secret"[^>]*value="([^"]+)"', response.content.decode()).group(1)


def agent_token(client, agent, secret):
    return post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(agent.client_id, secret))


@pytest.fixture
def shared(operator, world):
    agent, secret = services.create_shared_agent_identity(operator, name="Helpdesk agent", allowed_scopes=["kb:read"])
    for side in (world.a, world.b):
        with tenant_context(side.tenant):
            AgentGrant.objects.create(agent=agent)
    return agent, secret


@pytest.fixture
def tenant_owned(world):
    actor = Actor(user=world.b.owner, membership=world.b.memberships["owner"])
    with tenant_context(world.b.tenant):
        return services.create_tenant_agent_identity(actor, name="Bravo triage agent", allowed_scopes=["kb:read"])


def test_it_lists_every_agent_with_its_owner_and_grants(client, operator, shared, tenant_owned):
    client.force_login(operator)
    response = client.get(PAGE)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Helpdesk agent" in page
    assert "Bravo triage agent" in page
    assert "Bravo Inc" in page  # the owner tenant
    shared_row = page[page.index(f'data-agent="{shared[0].client_id}"') :]
    assert '<td class="num">2 tenants</td>' in shared_row[: shared_row.index("</tr>")]


def test_it_answers_404_to_a_tenant_owner(client, world, shared):
    client.force_login(world.a.owner)
    assert client.get(PAGE).status_code == 404
    assert client.post(f"{PAGE}{shared[0].pk}/disable/").status_code == 404
    shared[0].refresh_from_db()
    assert shared[0].is_active


def test_it_creates_a_shared_agent_and_shows_its_secret_once(client, operator):
    client.force_login(operator)
    response = client.post(f"{PAGE}new/", {"name": "Research agent", "allowed_scopes": ["kb:read", "agents:invoke"]})

    assert response.status_code == 200
    secret = secret_on_page(response)
    agent = AgentIdentity.objects.get(name="Research agent")
    assert agent.owner_tenant is None
    assert agent.secret_hash == hash_secret(secret)
    assert "no-store" in response["Cache-Control"]
    assert platform_audit_entries("agent_identity.created")[0].actor == operator
    assert secret.encode() not in client.get(PAGE).content


def test_it_refuses_a_shared_agent_without_a_name(client, operator):
    client.force_login(operator)
    response = client.post(f"{PAGE}new/", {"name": " ", "allowed_scopes": ["kb:read"]})
    assert response.status_code == 400
    assert not AgentIdentity.objects.exists()


def test_it_rotates_a_shared_agents_secret(client, operator, shared):
    agent, old_secret = shared
    client.force_login(operator)
    response = client.post(f"{PAGE}{agent.pk}/rotate/")

    assert response.status_code == 200
    new_secret = secret_on_page(response)
    assert agent_token(client, agent, old_secret).status_code == 401
    assert agent_token(client, agent, new_secret).status_code == 200
    assert platform_audit_entries("agent_identity.rotated")[0].actor == operator


def test_it_leaves_a_tenants_own_agent_to_that_tenant_to_rotate(client, operator, tenant_owned):
    agent, _ = tenant_owned
    client.force_login(operator)
    assert client.post(f"{PAGE}{agent.pk}/rotate/").status_code == 404


def test_it_disables_and_enables_an_agent(client, operator, shared):
    agent, secret = shared
    client.force_login(operator)

    client.post(f"{PAGE}{agent.pk}/disable/")
    agent.refresh_from_db()
    assert not agent.is_active
    assert agent_token(client, agent, secret).status_code == 401
    assert platform_audit_entries("agent_identity.disabled")[0].actor == operator

    client.post(f"{PAGE}{agent.pk}/enable/")
    agent.refresh_from_db()
    assert agent.is_active
    assert agent_token(client, agent, secret).status_code == 200
    with all_tenants("test: count every tenant's grants"):
        assert AgentGrant.unscoped.filter(agent=agent).count() == 2  # grants were kept


def test_it_records_disabling_a_tenants_agent_in_that_tenants_audit_log(client, operator, world, tenant_owned):
    agent, _ = tenant_owned
    client.force_login(operator)
    client.post(f"{PAGE}{agent.pk}/disable/")
    [entry] = audit_entries(world.b.tenant, "agent_identity.disabled")
    assert entry.actor == operator
    assert entry.after == {"enabled": False}


def test_it_says_so_when_an_agent_is_already_disabled(client, operator, shared):
    client.force_login(operator)
    client.post(f"{PAGE}{shared[0].pk}/disable/")
    response = client.post(f"{PAGE}{shared[0].pk}/disable/", follow=True)
    assert b"Helpdesk agent is already disabled." in response.content
