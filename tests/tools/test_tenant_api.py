"""The tenant's tools per agent over the REST API: the Tools page's twin.

GET lists the tools the plan allows and, per agent, which are enabled (members may read);
PUT sets an agent's whole set by tool key (owners and admins: MANAGE_AGENTS), through the
same service as the page, audited there. Bad keys, foreign agents and bad bodies are
problem JSON, never a 500.
"""

from __future__ import annotations

import json

import pytest

from agents.tools.models import AgentTool
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests import factories
from tests.agents.helpers import make_catalogue
from tests.portal.helpers import problem, validation_problem
from tests.tools.helpers import allow_tools_scope, enable, make_tools

BASE = "/api/v1/tenants/alpha/agent-tools/"


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    allow_tools_scope(catalogue.helpdesk)
    tools = make_tools(world.a.tenant.tier)
    tools["usage_this_month"].tiers.set([factories.make_tier("premium-test")])  # not in A's plan
    return {"helpdesk": catalogue.helpdesk, "tools": tools}


def put(client, url, body):
    return client.put(url, data=json.dumps(body), content_type="application/json")


def enabled_keys(side, agent) -> list[str]:
    with tenant_context(side.tenant):
        return sorted(AgentTool.objects.filter(agent=agent).values_list("tool__key", flat=True))


def test_it_lists_the_plans_tools_and_each_agents_choice_to_a_member(client, world, scene):
    enable(world.a, scene["helpdesk"], scene["tools"]["calculator"])
    client.force_login(world.a.member)
    body = client.get(BASE).json()
    assert body["entitled"] is True
    assert [t["key"] for t in body["tools"]] == ["calculator", "current_time"]
    assert body["agents"] == [
        {
            "id": scene["helpdesk"].pk,
            "slug": "helpdesk",
            "name": "Helpdesk",
            "tools": ["calculator"],
            "can_call_tools": True,
            "cannot_call_tools_reason": None,
        }
    ]
    one = client.get(f"{BASE}{scene['helpdesk'].pk}/").json()
    assert one == body["agents"][0]


def test_an_admin_puts_the_set_of_tools_of_an_agent_audited(client, world, scene):
    helpdesk = scene["helpdesk"]
    client.force_login(world.a.admin)
    response = put(client, f"{BASE}{helpdesk.pk}/", {"tools": ["current_time", "calculator"]})
    assert response.status_code == 200, response.content
    assert response.json()["tools"] == ["calculator", "current_time"]
    assert enabled_keys(world.a, helpdesk) == ["calculator", "current_time"]
    assert enabled_keys(world.b, helpdesk) == []
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="tools.agent_tools_changed")
    assert entry.actor == world.a.admin and entry.after == {"tools": ["calculator", "current_time"]}
    assert put(client, f"{BASE}{helpdesk.pk}/", {"tools": []}).json()["tools"] == []
    assert enabled_keys(world.a, helpdesk) == []


@pytest.mark.parametrize("role", ["member", "billing"])
def test_only_owners_and_admins_may_change_it(client, world, scene, role):
    client.force_login(world.a.user(role))
    problem(put(client, f"{BASE}{scene['helpdesk'].pk}/", {"tools": ["calculator"]}), 403)
    assert enabled_keys(world.a, scene["helpdesk"]) == []


@pytest.mark.parametrize("key", ["no_such_tool", "usage_this_month", "", "x" * 65, "calc\x00ulator"])
def test_a_tool_key_the_plan_does_not_have_is_a_400_problem(client, world, scene, key):
    client.force_login(world.a.owner)
    body = validation_problem(put(client, f"{BASE}{scene['helpdesk'].pk}/", {"tools": ["calculator", key]}))
    assert "tools" in body["errors"]
    assert enabled_keys(world.a, scene["helpdesk"]) == []


@pytest.mark.parametrize(
    "raw",
    ['{"tools": "calculator"}', '{"tools": null}', "{}", "[]", '{"tools": [1, {"a": 2}]}', "not json", '"x"'],
)
def test_a_malformed_body_is_a_400_problem(client, world, scene, raw):
    client.force_login(world.a.owner)
    response = client.put(f"{BASE}{scene['helpdesk'].pk}/", data=raw, content_type="application/json")
    problem(response, 400)


def test_an_unknown_or_foreign_agent_is_a_404_problem(client, world, scene):
    client.force_login(world.a.owner)
    problem(put(client, f"{BASE}999999/", {"tools": []}), 404)
    problem(client.get(f"{BASE}999999/"), 404)
    problem(client.get(f"{BASE}99999999999999999999/"), 404)


def test_an_agent_whose_identity_cannot_call_tools_is_refused_with_the_reason(client, world, scene):
    helpdesk = scene["helpdesk"]
    identity = helpdesk.identity
    identity.allowed_scopes = ["agents:invoke", "kb:read"]
    identity.save(update_fields=["allowed_scopes"])
    client.force_login(world.a.owner)
    listed = client.get(f"{BASE}{helpdesk.pk}/").json()
    assert listed["can_call_tools"] is False and "tools:invoke" in listed["cannot_call_tools_reason"]
    body = problem(put(client, f"{BASE}{helpdesk.pk}/", {"tools": ["calculator"]}), 400)
    assert "tools:invoke" in body["detail"]
    assert enabled_keys(world.a, helpdesk) == []


def test_another_tenants_slug_is_a_404(client, world, scene):
    client.force_login(world.a.owner)
    problem(client.get("/api/v1/tenants/bravo/agent-tools/"), 404)
    problem(put(client, f"/api/v1/tenants/bravo/agent-tools/{scene['helpdesk'].pk}/", {"tools": []}), 404)


def test_patch_is_not_offered(client, world, scene):
    client.force_login(world.a.owner)
    response = client.patch(f"{BASE}{scene['helpdesk'].pk}/", data="{}", content_type="application/json")
    problem(response, 405)
