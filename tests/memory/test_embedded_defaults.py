"""A silo tenant bound to AgentCore Memory, on a portal that runs on embedded defaults.

AGENT_RUNTIME=local is the embedded development runtime: every tenant's turns run in the
worker and a tenant's AWS bindings do not apply, so its memories live in the portal's own
table (no boto3 client, no credentials looked for), and the Memory page says so in one
line. The binding itself stays: with AGENT_RUNTIME=agentcore (or http) the same tenant's
memories are in AgentCore Memory again (tests/memory/test_stores.py, test_agentcore_page.py).
"""

from __future__ import annotations

import pytest

from agents.memory import services, stores
from tests.aws_guard import refuse_aws_clients
from tests.memory.helpers import RECALL, REMEMBER, entitle, memory_catalogue, post, records, token_for, turn

MEMORY_ID = "alpha_memory-a1B2c3D4e5"


@pytest.fixture
def silo(world, monkeypatch, settings):
    settings.AGENT_RUNTIME = "local"
    entitle(world.a.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)
    tenant = world.a.tenant
    tenant.deployment_model = "silo"
    tenant.resource_bindings = {**(tenant.resource_bindings or {}), "memory_id": MEMORY_ID}
    tenant.save(update_fields=["deployment_model", "resource_bindings"])
    asked = refuse_aws_clients(monkeypatch)
    yield catalogue
    assert asked == [], "an AWS client was created on embedded defaults"


def test_it_keeps_and_recalls_a_bound_tenants_memories_in_the_portals_own_store(client, world, silo):
    assert isinstance(stores.store_for(world.a.tenant), stores.LocalStore)
    token = token_for(world.a, turn(world.a, world.a.member, silo, status="running"))

    kept = post(client, REMEMBER, token, content="My name is Ada.")
    recalled = post(client, RECALL, token, query="What is my name?", agent="helpdesk")

    assert kept.status_code == 201, kept.content
    assert [r.content for r in records(world.a)] == ["My name is Ada."]
    assert recalled.status_code == 200, recalled.content
    assert [m["content"] for m in recalled.json()["memories"]] == ["My name is Ada."]


def test_the_memory_page_lists_the_portals_store_and_says_why_in_one_line(client, world, silo):
    client.force_login(world.a.admin)
    added = client.post("/t/alpha/memory/shared/", {"content": "Support hours are 9 to 17."})
    assert added.status_code == 302, added.content.decode()

    page = client.get("/t/alpha/memory/").content.decode()

    assert 'id="memory-binding-unused"' in page
    assert f"Bound to AgentCore Memory <code>{MEMORY_ID}</code>" in page
    assert "this portal runs on embedded defaults, so the portal's own store is used" in page
    assert 'id="memory-in-agentcore"' not in page and 'id="memory-store-unavailable"' not in page
    assert "Support hours are 9 to 17." in page
    assert 'id="member-memory"' in page  # the table's counts and clearing are back


def test_with_aws_resources_on_the_same_tenant_is_in_agentcore_memory_again(world, silo, settings, monkeypatch):
    settings.AGENT_RUNTIME = "agentcore"
    monkeypatch.setattr(stores, "make_client", lambda region: "stubbed client")
    store = stores.store_for(world.a.tenant)
    assert isinstance(store, stores.AgentCoreStore) and store.memory_id == MEMORY_ID
    assert services.unused_memory_binding(world.a.tenant) == ""


def test_the_overview_shows_the_bindings_and_says_they_are_not_used_here(client, world, silo, settings):
    client.force_login(world.a.member)
    page = client.get("/t/alpha/").content.decode()
    assert MEMORY_ID in page and 'id="aws-bindings-unused"' in page

    settings.AGENT_RUNTIME = "agentcore"
    assert 'id="aws-bindings-unused"' not in client.get("/t/alpha/").content.decode()
