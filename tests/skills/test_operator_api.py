"""Shared skills over the operator API: create, change, retire and offer to tiers, through the
console's own service (validated, audited, every tenant's turn sees the change at once)."""

from __future__ import annotations

import json

import pytest

from agents.skills import services
from agents.skills.models import Skill
from tenants.context import all_tenants, tenant_context
from tenants.identity.tokens import issue_user_token
from tenants.models import AuditLog
from tests.agents.conftest import catalogue  # noqa: F401 (fixture)
from tests.portal.helpers import problem, validation_problem
from tests.skills.helpers import attach, own_skill, shared_skill

API = "/api/v1/operator/skills/"
NEW = {
    "key": "escalate",
    "name": "Escalate to a person",
    "description": "The customer asks for a human.",
    "instructions": "1. Say who will call back.",
}


def send(client, method: str, path: str, body: dict, **extra):
    return client.generic(method, API + path, json.dumps(body), content_type="application/json", **extra)


def shared(pk: int) -> Skill:
    with all_tenants("test"):
        return Skill.unscoped.get(pk=pk)


def test_it_creates_a_shared_skill_offered_to_tiers_and_audits_it(client, world, operator):
    client.force_login(operator)
    tier = world.a.tenant.tier.slug
    response = send(client, "POST", "", {**NEW, "tiers": [tier], "status": "active"}, REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["key"], body["status"], body["tiers"]) == ("escalate", "active", [tier])
    assert [s["key"] for s in client.get(API).json()["results"]] == ["escalate"]
    assert client.get(f"{API}{body['id']}/").json()["instructions"] == NEW["instructions"]
    with all_tenants("test"):
        row = AuditLog.unscoped.get(action="skills.skill_created")
    assert (row.tenant_id, row.actor_id, row.ip_address) == (None, operator.pk, "203.0.113.7")
    assert (row.before, row.after["tiers"]) == ({}, [tier])
    with tenant_context(world.a.tenant):
        assert [s.key for s in services.tier_shared_skills(world.a.tenant)] == ["escalate"]


def test_a_new_skill_is_a_draft_offered_to_no_tier_unless_told(client, world, operator):
    client.force_login(operator)
    body = send(client, "POST", "", NEW).json()
    assert (body["status"], body["tiers"]) == ("draft", [])


def test_retiring_a_skill_takes_it_from_the_agents_that_follow_it(client, world, catalogue, operator):  # noqa: F811
    skill = shared_skill(world.a.tenant.tier)
    attach(world.a, catalogue.helpdesk, skill)
    assert services.skills_for_turn(world.a.tenant, catalogue.helpdesk) != []
    client.force_login(operator)

    response = send(client, "PATCH", f"{skill.pk}/", {"status": "retired"})

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["name"]) == ("retired", skill.name)  # the rest kept
    assert services.skills_for_turn(world.a.tenant, catalogue.helpdesk) == []
    with all_tenants("test"):
        row = AuditLog.unscoped.get(action="skills.skill_updated")
    assert (row.before["status"], row.after["status"]) == ("active", "retired")


def test_offering_a_skill_to_other_tiers_replaces_the_list(client, world, operator):
    from tests.factories import make_tier

    skill = shared_skill(world.a.tenant.tier)
    gold = make_tier("gold")
    client.force_login(operator)
    response = send(client, "PATCH", f"{skill.pk}/", {"tiers": ["gold", "gold"]})
    assert response.json()["tiers"] == [gold.slug]
    assert shared(skill.pk).tiers == ["gold"]
    with tenant_context(world.a.tenant):
        assert services.tier_shared_skills(world.a.tenant) == []


@pytest.mark.parametrize(
    "body, text",
    [
        ({**NEW, "tiers": ["no-such-tier"]}, "Unknown tier"),
        ({**NEW, "key": "refund"}, "A shared skill with that key exists"),
        ({**NEW, "key": "not a key"}, "key"),
        ({**NEW, "instructions": "x" * 8001}, "instructions"),
        ({**NEW, "status": "paused"}, "status"),
    ],
)
def test_bad_input_is_a_400_problem(client, world, operator, body, text):
    shared_skill(world.a.tenant.tier)
    client.force_login(operator)
    problem_body = validation_problem(send(client, "POST", "", body))
    assert text in json.dumps(problem_body)
    assert sorted(s.key for s in Skill.unscoped.filter(owner_tenant=None)) == ["refund"]


def test_a_tenants_own_skill_is_not_the_operators(client, world, operator):
    skill = own_skill(world.a)
    client.force_login(operator)
    problem(client.get(f"{API}{skill.pk}/"), 404)
    problem(send(client, "PATCH", f"{skill.pk}/", {"status": "retired"}), 404)
    problem(client.get(f"{API}nope/"), 404)
    assert skill.pk not in {s["id"] for s in client.get(API).json()["results"]}
    with all_tenants("test"):
        assert Skill.unscoped.get(pk=skill.pk).status == "active"


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_a_tenant_users_token_or_session_gets_404_and_changes_nothing(client, world, role):
    skill = shared_skill(world.a.tenant.tier)
    user = world.a.user(role)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {issue_user_token(user, world.a.tenant)}"}
    for extra in (bearer, {}):
        if not extra:
            client.force_login(user)
        problem(client.get(API, **extra), 404)
        problem(send(client, "POST", "", NEW, **extra), 404)
        problem(send(client, "PATCH", f"{skill.pk}/", {"status": "retired"}, **extra), 404)
    assert shared(skill.pk).status == "active"
    assert Skill.unscoped.filter(key="escalate").count() == 0


def test_the_routes_are_in_the_openapi_schema(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/operator/skills/"])
    assert {"get", "patch"} <= set(paths["/api/v1/operator/skills/{id}/"])
