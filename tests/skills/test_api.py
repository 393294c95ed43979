"""Skills over the REST API: lists, writes by admins, problem JSON for bad input."""

from __future__ import annotations

import json

import pytest

from agents.skills.models import AgentSkill, Skill
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog
from tests.agents.helpers import make_catalogue
from tests.skills.helpers import own_skill, shared_skill

BASE = "/api/v1/tenants/alpha"


@pytest.fixture
def scene(world, client):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    shared = shared_skill(world.a.tenant.tier)
    client.force_login(world.a.admin)
    return {"catalogue": catalogue, "shared": shared, "client": client}


def send(client, method: str, url: str, body):
    return getattr(client, method)(url, data=json.dumps(body), content_type="application/json")


def assert_problem(response, status: int):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= set(response.json())


def test_it_lists_the_plans_shared_skills_and_the_tenants_own_only(world, scene):
    mine, theirs = own_skill(world.a), own_skill(world.b, key="bravo-own")
    body = scene["client"].get(f"{BASE}/skills/").json()
    ids = {row["id"] for row in body["results"]}
    assert ids == {scene["shared"].pk, mine.pk} and theirs.pk not in ids


def test_an_admin_creates_changes_and_attaches_a_bridged_skill(world, scene):
    client = scene["client"]
    body = {"key": "vip", "name": "VIP", "description": "VIP customer", "instructions": "Call.", "status": "active"}
    response = send(client, "post", f"{BASE}/skills/", {**body, "extends": scene["shared"].pk})
    assert response.status_code == 201, response.content
    skill_id = response.json()["id"]
    assert response.json()["extends"] == scene["shared"].pk
    response = send(client, "patch", f"{BASE}/skills/{skill_id}/", {"instructions": "Call twice."})
    assert response.status_code == 200 and response.json()["instructions"] == "Call twice."
    agent = scene["catalogue"].helpdesk
    response = send(client, "put", f"{BASE}/agent-skills/{agent.pk}/", {"skills": [skill_id]})
    assert response.json() == {"agent": agent.pk, "skills": [skill_id]}
    listed = client.get(f"{BASE}/agent-skills/").json()["results"]
    assert {"agent": agent.pk, "skills": [skill_id]} in listed
    with tenant_context(world.a.tenant):
        actions = list(AuditLog.objects.filter(action__startswith="skills.").values_list("action", flat=True))
    assert sorted(actions) == ["skills.agent_skills_changed", "skills.skill_created", "skills.skill_updated"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"key": "bad key", "name": "N", "description": "d", "instructions": "i"},
        {"key": "k", "name": "N", "description": "d", "instructions": "x" * 9000},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "status": "nope"},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "extends": 2**70},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "extends": 999999},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "extends": "x"},
        [],
    ],
)
def test_bad_input_is_problem_json(scene, body):
    assert_problem(send(scene["client"], "post", f"{BASE}/skills/", body), 400)


@pytest.mark.parametrize("body", [{}, {"skills": "x"}, {"skills": [0]}, {"skills": [2**70]}, {"skills": [999999]}])
def test_a_bad_agent_skills_body_is_problem_json(scene, body):
    agent = scene["catalogue"].helpdesk
    assert_problem(send(scene["client"], "put", f"{BASE}/agent-skills/{agent.pk}/", body), 400)


def test_another_tenants_skill_is_neither_attached_nor_changed(world, scene):
    theirs = own_skill(world.b, key="bravo-own")
    client = scene["client"]
    agent = scene["catalogue"].helpdesk
    assert_problem(send(client, "put", f"{BASE}/agent-skills/{agent.pk}/", {"skills": [theirs.pk]}), 400)
    assert_problem(send(client, "patch", f"{BASE}/skills/{theirs.pk}/", {"name": "Mine now"}), 404)
    assert_problem(send(client, "patch", f"{BASE}/skills/{scene['shared'].pk}/", {"name": "Mine now"}), 404)
    with all_tenants("test"):
        assert Skill.unscoped.get(pk=theirs.pk).name == "Bravo Inc refunds"
        assert not AgentSkill.unscoped.exists()


def test_a_member_reads_but_may_not_write(world, scene, client):
    client.force_login(world.a.member)
    assert client.get(f"{BASE}/skills/").status_code == 200
    body = {"key": "k", "name": "N", "description": "d", "instructions": "i"}
    assert_problem(send(client, "post", f"{BASE}/skills/", body), 403)
    agent = scene["catalogue"].helpdesk
    assert_problem(send(client, "put", f"{BASE}/agent-skills/{agent.pk}/", {"skills": []}), 403)


def test_it_is_in_the_openapi_schema(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    assert "post" in paths["/api/v1/tenants/{tenant_slug}/skills/"]
    assert "patch" in paths["/api/v1/tenants/{tenant_slug}/skills/{id}/"]
    assert "put" in paths["/api/v1/tenants/{tenant_slug}/agent-skills/{id}/"]
