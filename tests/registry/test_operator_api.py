"""The shared agent catalogue over the operator API: the console's rules (four eyes, conditional
transitions, audit with before and after), problem JSON for every refusal, staff sessions only."""

from __future__ import annotations

import json

import pytest

from agents.models import Agent
from agents.registry.models import AgentVersion
from tenants.context import all_tenants
from tenants.identity.tokens import issue_user_token
from tenants.models import AuditLog
from tests.portal.helpers import problem, validation_problem
from tests.registry.helpers import as_operator, in_tenant, own_agent

API = "/api/v1/operator/registry/"


def post(client, path: str, body: dict | None = None, **extra):
    return client.post(API + path, json.dumps(body or {}), content_type="application/json", **extra)


NEW_AGENT = {"name": "Translator", "instructions": "Translate what you are given.", "offered_to_tiers": []}


def new_shared_agent(client, **overrides):
    body = {**NEW_AGENT, **overrides}
    return post(client, "agents/", body)


def submitted(client, **overrides) -> dict:
    """A new shared agent's version 1, drafted and submitted by the signed-in operator."""
    created = new_shared_agent(client, **overrides)
    assert created.status_code == 201, created.content
    response = post(client, f"versions/{created.json()['id']}/submit/")
    assert response.status_code == 200, response.content
    return response.json()


def test_it_drafts_submits_and_publishes_a_shared_agent_with_four_eyes(client, world, operator, second_operator):
    client.force_login(operator)
    tier = world.a.tenant.tier.slug
    created = new_shared_agent(client, offered_to_tiers=[tier], change_note="First cut")
    assert created.status_code == 201, created.content
    version = created.json()
    assert (version["number"], version["state"], version["live"], version["author"]) == (
        1,
        "draft",
        False,
        operator.email,
    )
    assert version["offered_to_tiers"] == [tier]
    assert post(client, f"versions/{version['id']}/submit/").json()["state"] == "submitted"

    body = problem(post(client, f"versions/{version['id']}/approve/"), 403)
    assert "someone else must review it" in body["detail"]

    client.force_login(second_operator)
    approved = post(client, f"versions/{version['id']}/approve/", REMOTE_ADDR="203.0.113.9")
    assert approved.status_code == 200, approved.content
    assert (approved.json()["state"], approved.json()["live"], approved.json()["reviewed_by"]) == (
        "approved",
        True,
        second_operator.email,
    )
    agent = client.get(f"{API}agents/{version['agent']}/").json()
    assert (agent["status"], agent["live_version"], agent["offered_to_tiers"]) == ("published", 1, [tier])
    with all_tenants("test"):
        row = AuditLog.unscoped.get(action="registry.version_approved")
    assert (row.tenant_id, row.actor_id, row.ip_address) == (None, second_operator.pk, "203.0.113.9")
    assert (row.before["state"], row.after["state"]) == ("submitted", "approved")
    assert (row.before["agent"]["status"], row.after["agent"]["status"]) == ("draft", "published")


def test_it_lists_shared_agents_their_versions_and_the_review_queue(client, world, catalogue, operator):
    client.force_login(operator)
    version = submitted(client)
    listed = client.get(API + "agents/").json()
    rows = {row["slug"]: row for row in listed["results"]}
    assert listed["count"] == len(rows)
    assert {"helpdesk", "translator"} <= set(rows)
    assert rows["translator"]["pending_reviews"] == 1
    versions = client.get(f"{API}agents/{version['agent']}/versions/").json()
    assert [(v["number"], v["state"]) for v in versions["results"]] == [(1, "submitted")]
    queue = client.get(API + "versions/", {"state": "submitted"}).json()
    assert [v["id"] for v in queue["results"]] == [version["id"]]
    assert client.get(f"{API}versions/{version['id']}/").json()["instructions"] == "Translate what you are given."
    assert validation_problem(client.get(API + "versions/", {"state": "limbo"}))["errors"]["state"]


def test_it_drafts_a_new_version_of_a_published_agent_without_changing_the_live_one(client, world, catalogue, operator):
    client.force_login(operator)
    helpdesk = catalogue.helpdesk
    response = post(
        client, f"agents/{helpdesk.pk}/versions/", {"name": "Helpdesk", "instructions": "Be brief.", "model": ""}
    )
    assert response.status_code == 201, response.content
    assert (response.json()["state"], response.json()["live"]) == ("draft", False)
    assert as_operator(lambda: Agent.unscoped.get(pk=helpdesk.pk).instructions) != "Be brief."


def test_a_rejection_needs_a_reason_and_a_reviewed_version_is_a_conflict(client, world, operator, second_operator):
    client.force_login(operator)
    version = submitted(client)
    client.force_login(second_operator)
    assert validation_problem(post(client, f"versions/{version['id']}/reject/", {"reason": " "}))
    rejected = post(client, f"versions/{version['id']}/reject/", {"reason": "Too vague"})
    assert (rejected.json()["state"], rejected.json()["review_note"]) == ("rejected", "Too vague")

    body = problem(post(client, f"versions/{version['id']}/approve/"), 409)
    assert "not waiting for a review" in body["detail"]
    assert "not a draft" in problem(post(client, f"versions/{version['id']}/submit/"), 409)["detail"]
    assert as_operator(lambda: Agent.unscoped.get(pk=version["agent"]).status) == "draft"


def test_a_roll_back_submits_a_copy_of_an_earlier_published_version(client, world, operator, second_operator):
    client.force_login(operator)
    first = submitted(client)
    client.force_login(second_operator)
    post(client, f"versions/{first['id']}/approve/")
    client.force_login(operator)
    second = post(client, f"agents/{first['agent']}/versions/", {"name": "Translator", "instructions": "New."}).json()
    post(client, f"versions/{second['id']}/submit/")
    client.force_login(second_operator)
    post(client, f"versions/{second['id']}/approve/")

    copy = post(client, f"versions/{first['id']}/roll-back/")
    assert copy.status_code == 201, copy.content
    assert (copy.json()["number"], copy.json()["state"], copy.json()["rolled_back_from"]) == (3, "submitted", 1)
    # The operator who asked for the roll back is its author: someone else approves it.
    assert problem(post(client, f"versions/{copy.json()['id']}/approve/"), 403)
    client.force_login(operator)
    assert post(client, f"versions/{copy.json()['id']}/approve/").status_code == 200
    assert as_operator(lambda: Agent.unscoped.get(pk=first["agent"]).instructions) == first["instructions"]
    # Only a version that was published can be rolled back to.
    draft = post(client, f"agents/{first['agent']}/versions/", {"name": "Translator", "instructions": "Draft."})
    assert problem(post(client, f"versions/{draft.json()['id']}/roll-back/"), 409)


@pytest.mark.parametrize(
    "overrides, field, text",
    [
        ({"offered_to_tiers": ["gold"]}, "offered_to_tiers", "Unknown tiers: gold"),
        ({"model": "no-such-model"}, "model", "Unknown model"),
        ({"instructions": "   "}, "instructions", "cannot be empty"),
        ({"name": ""}, "name", "cannot be empty"),
        ({"slug": "helpdesk"}, "slug", "already exists"),
    ],
)
def test_bad_input_is_a_400_problem_naming_the_field(client, world, catalogue, operator, overrides, field, text):
    client.force_login(operator)
    body = validation_problem(new_shared_agent(client, **overrides))
    assert text in " ".join(body["errors"][field])


def test_a_tenants_own_agent_and_its_versions_are_not_the_operators(client, world, catalogue, operator):
    agent, version = own_agent(world.a, "admin")
    client.force_login(operator)
    for path in (f"agents/{agent.pk}/", f"agents/{agent.pk}/versions/", f"versions/{version.pk}/"):
        problem(client.get(API + path), 404)
    problem(post(client, f"versions/{version.pk}/submit/"), 404)
    problem(client.get(API + "versions/x/"), 404)
    assert in_tenant(world.a, lambda: AgentVersion.objects.get(pk=version.pk).state) == "draft"
    assert version.pk not in {v["id"] for v in client.get(API + "versions/").json()["results"]}


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_a_tenant_users_token_or_session_gets_404_and_changes_nothing(client, world, catalogue, operator, role):
    client.force_login(operator)
    version = submitted(client)
    client.logout()
    user = world.a.user(role)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {issue_user_token(user, world.a.tenant)}"}
    for extra in (bearer, {}):
        if not extra:
            client.force_login(user)
        problem(client.get(API + "agents/", **extra), 404)
        problem(client.get(API + "versions/", **extra), 404)
        problem(post(client, "agents/", NEW_AGENT, **extra), 404)
        for verb in ("approve", "reject", "roll-back"):
            problem(post(client, f"versions/{version['id']}/{verb}/", {"reason": "x"}, **extra), 404)
    assert as_operator(lambda: AgentVersion.unscoped.get(pk=version["id"]).state) == "submitted"
    assert as_operator(lambda: Agent.unscoped.filter(slug="translator").count()) == 1


def test_an_operators_own_bearer_token_is_not_an_operator_credential(client, world, operator):
    from tests.factories import add_member

    add_member(world.a.tenant, operator, "owner")
    token = issue_user_token(operator, world.a.tenant)
    problem(client.get(API + "agents/", HTTP_AUTHORIZATION=f"Bearer {token}"), 404)
    problem(post(client, "agents/", NEW_AGENT, HTTP_AUTHORIZATION=f"Bearer {token}"), 404)


def test_the_routes_are_in_the_openapi_schema(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    for path in (
        "agents/",
        "agents/{id}/",
        "agents/{id}/versions/",
        "versions/",
        "versions/{id}/",
        "versions/{id}/submit/",
        "versions/{id}/approve/",
        "versions/{id}/reject/",
        "versions/{id}/roll-back/",
    ):
        assert f"/api/v1/operator/registry/{path}" in paths, path
    approve = paths["/api/v1/operator/registry/versions/{id}/approve/"]["post"]["responses"]
    assert {"200", "400", "403", "404", "409"} <= set(approve)
    assert "application/problem+json" in approve["409"]["content"]
