"""Which knowledge bases each role reaches: knowledge managers all of the tenant's, a member
only those read by the agents members may use; any other base answers 404, API and UI alike."""

from __future__ import annotations

import json

import pytest

from agents.knowledge.models import AgentKnowledge
from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue
from tests.knowledge.helpers import entitle, ingest, make_kb

BASE = "/api/v1/tenants/alpha"


@pytest.fixture
def scene(world):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    handbook, payroll = make_kb(world.a, "Handbook"), make_kb(world.a, "Payroll")
    ingest(world.a, handbook, "refunds.md", "# Refunds\n\nWithin 30 days.")
    secret = ingest(world.a, payroll, "salaries.md", "# Salaries\n\nThe refunds officer earns a lot.")
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.create(agent=catalogue.helpdesk, knowledge_base=handbook)
        AgentKnowledge.objects.create(agent=catalogue.not_enabled, knowledge_base=payroll)
    return {"handbook": handbook, "payroll": payroll, "secret": secret}


def _search(client, kb):
    body = json.dumps({"query": "refunds"})
    return client.post(f"{BASE}/knowledge-bases/{kb.pk}/search/", data=body, content_type="application/json")


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_it_shows_managers_every_knowledge_base(client, world, scene, role):
    client.force_login(world.a.user(role))
    listed = client.get(f"{BASE}/knowledge-bases/").json()
    assert [kb["name"] for kb in listed["results"]] == ["Handbook", "Payroll"]
    assert client.get(f"{BASE}/knowledge-bases/{scene['payroll'].pk}/").status_code == 200
    assert _search(client, scene["payroll"]).status_code == 200


def test_it_shows_members_only_the_bases_of_their_agents(client, world, scene):
    client.force_login(world.a.user("member"))
    listed = client.get(f"{BASE}/knowledge-bases/").json()
    assert [kb["name"] for kb in listed["results"]] == ["Handbook"]
    assert client.get(f"{BASE}/knowledge-bases/{scene['handbook'].pk}/").status_code == 200
    assert _search(client, scene["handbook"]).status_code == 200


def test_it_answers_404_to_members_for_other_bases(client, world, scene):
    client.force_login(world.a.user("member"))
    payroll, secret = scene["payroll"], scene["secret"]
    assert client.get(f"{BASE}/knowledge-bases/{payroll.pk}/").status_code == 404
    assert _search(client, payroll).status_code == 404
    assert client.get(f"{BASE}/knowledge-documents/{secret.pk}/").status_code == 404
    documents = client.get(f"{BASE}/knowledge-documents/").json()["results"]
    assert secret.pk not in [d["id"] for d in documents]


def test_it_answers_404_to_members_for_documents_of_other_bases_in_the_ui(client, world, scene):
    client.force_login(world.a.user("member"))
    assert client.get(f"/t/alpha/knowledge/documents/{scene['secret'].pk}/").status_code == 404


def test_it_lets_members_read_all_bases_when_their_agent_reads_all(client, world, scene):
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.filter(knowledge_base=scene["handbook"]).delete()
    client.force_login(world.a.user("member"))
    listed = client.get(f"{BASE}/knowledge-bases/").json()
    assert [kb["name"] for kb in listed["results"]] == ["Handbook", "Payroll"]


def test_it_answers_404_to_an_outsider(client, world, scene):
    client.force_login(world.b.user("admin"))
    assert client.get(f"{BASE}/knowledge-bases/{scene['handbook'].pk}/").status_code == 404
    assert _search(client, scene["handbook"]).status_code == 404
