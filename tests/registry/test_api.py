"""The registry API: the catalogue, versions, the review, and problem JSON for bad input."""

from __future__ import annotations

import pytest

from agents.models import ModelOffering, Provider
from agents.registry.models import AgentVersion
from tenants.context import all_tenants
from tests.registry.helpers import in_tenant

PROBLEM = "application/problem+json"


def url(side, rest: str) -> str:
    return f"/api/v1/tenants/{side.tenant.slug}/registry/{rest}"


def post(client, path, body=None):
    return client.post(path, body or {}, content_type="application/json")


def new_agent(client, side, **overrides):
    body = {"name": "Refund helper", "instructions": "Answer refund questions.", "model": "offline-small"}
    body.update(overrides)
    return post(client, url(side, "agents/"), body)


def test_the_catalogue_lists_what_members_may_chat_with(client, world, catalogue):
    client.force_login(world.a.member)
    response = client.get(url(world.a, "agents/"))
    assert response.status_code == 200
    assert [row["slug"] for row in response.json()["results"]] == ["helpdesk"]
    assert response.json()["results"][0]["model"] == "offline-small"
    assert client.get(url(world.a, "agents/?q=nothing-like-it")).json()["count"] == 0


def test_a_draft_is_submitted_and_approved_by_someone_else(client, world, catalogue):
    client.force_login(world.a.admin)
    created = new_agent(client, world.a)
    assert created.status_code == 201, created.json()
    version = created.json()
    assert (version["number"], version["state"], version["live"]) == (1, "draft", False)
    assert post(client, url(world.a, f"versions/{version['id']}/submit/")).json()["state"] == "submitted"

    refused = post(client, url(world.a, f"versions/{version['id']}/approve/"))
    assert refused.status_code == 403
    assert refused["Content-Type"] == PROBLEM
    assert "someone else must review it" in refused.json()["detail"]

    client.force_login(world.a.owner)
    approved = post(client, url(world.a, f"versions/{version['id']}/approve/"))
    assert approved.status_code == 200
    assert (approved.json()["state"], approved.json()["live"]) == ("approved", True)
    listed = client.get(url(world.a, f"agents/{version['agent']}/versions/")).json()
    assert [(v["number"], v["state"]) for v in listed["results"]] == [(1, "approved")]


@pytest.mark.parametrize(
    "overrides, field, text",
    [
        ({"model": "no-such-model"}, "model", "Unknown model"),
        ({"model": "premium-only"}, "model", "plan does not include"),
        ({"instructions": "   "}, "instructions", "cannot be empty"),
        ({"name": ""}, "name", "cannot be empty"),
    ],
)
def test_bad_input_is_problem_json(client, world, catalogue, overrides, field, text):
    with all_tenants("test: a model outside the tier"):
        ModelOffering.unscoped.create(key="premium-only", name="Premium only", provider=Provider.OFFLINE, model_id="x")
    client.force_login(world.a.admin)
    response = new_agent(client, world.a, **overrides)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert text in " ".join(body["errors"][field])


def test_a_rejection_needs_a_reason(client, world, catalogue):
    client.force_login(world.a.admin)
    version = new_agent(client, world.a).json()
    post(client, url(world.a, f"versions/{version['id']}/submit/"))
    client.force_login(world.a.owner)
    response = post(client, url(world.a, f"versions/{version['id']}/reject/"), {"reason": ""})
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert post(client, url(world.a, f"versions/{version['id']}/reject/"), {"reason": "Vague"}).json()["state"] == (
        "rejected"
    )


def test_a_member_may_read_the_catalogue_but_not_write(client, world, catalogue):
    client.force_login(world.a.member)
    response = new_agent(client, world.a)
    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM


def test_another_tenants_versions_are_not_found(client, world, catalogue):
    client.force_login(world.b.admin)
    version = new_agent(client, world.b).json()
    client.force_login(world.a.owner)
    for path in (f"versions/{version['id']}/", f"agents/{version['agent']}/versions/"):
        response = client.get(url(world.a, path))
        assert response.status_code == 404, path
    assert post(client, url(world.a, f"versions/{version['id']}/approve/")).status_code == 404
    assert in_tenant(world.b, lambda: AgentVersion.objects.get().state) == "draft"


def test_the_routes_are_in_the_openapi_schema(client, world):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert "/api/v1/tenants/{tenant_slug}/registry/agents/" in paths
    assert "/api/v1/tenants/{tenant_slug}/registry/versions/{id}/approve/" in paths
