"""The tenant admin's tools page (which tools each agent may use) and the operator's registry."""

from __future__ import annotations

import json

import pytest

from agents.tools.models import AgentTool, Tool, ToolStatus
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog
from tests import factories
from tests.agents.helpers import make_catalogue
from tests.tools.helpers import allow_tools_scope, enable, make_tools


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    allow_tools_scope(catalogue.helpdesk)  # an identity without tools:invoke cannot have tools enabled
    other_tier = factories.make_tier("premium-test")
    tools = make_tools(world.a.tenant.tier)
    tools["usage_this_month"].tiers.set([other_tier])  # not in A's plan
    return {"catalogue": catalogue, "tools": tools}


def enabled_keys(side, agent) -> list[str]:
    with tenant_context(side.tenant):
        return sorted(AgentTool.objects.filter(agent=agent).values_list("tool__key", flat=True))


# --- tenant admin ---------------------------------------------------------------------------


def test_an_admin_sees_the_plans_tools_and_the_agents(client, world, scene):
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/tools/").content.decode()
    assert "Calculator" in page and "Current Time" in page
    assert "Usage This Month" not in page  # not in the plan
    assert f'id="agent-{scene["catalogue"].helpdesk.pk}"' in page
    assert "Not enabled" not in page  # an agent the tenant did not allow


def test_an_admin_enables_tools_for_an_agent_audited(client, world, scene):
    helpdesk, tools = scene["catalogue"].helpdesk, scene["tools"]
    client.force_login(world.a.admin)
    response = client.post(
        f"/t/alpha/tools/agents/{helpdesk.pk}/", {"tools": [tools["calculator"].pk, tools["current_time"].pk]}
    )
    assert response.status_code == 302
    assert enabled_keys(world.a, helpdesk) == ["calculator", "current_time"]
    assert enabled_keys(world.b, helpdesk) == []  # the same shared agent in B is untouched
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="tools.agent_tools_changed")
    assert entry.before == {"tools": []} and entry.after == {"tools": ["calculator", "current_time"]}
    assert entry.actor == world.a.admin
    client.post(f"/t/alpha/tools/agents/{helpdesk.pk}/", {})
    assert enabled_keys(world.a, helpdesk) == []


def test_a_tool_outside_the_plan_cannot_be_enabled(client, world, scene):
    helpdesk = scene["catalogue"].helpdesk
    client.force_login(world.a.owner)
    response = client.post(
        f"/t/alpha/tools/agents/{helpdesk.pk}/", {"tools": [scene["tools"]["usage_this_month"].pk]}, follow=True
    )
    assert "does not include that tool" in response.content.decode()
    assert enabled_keys(world.a, helpdesk) == []


def test_a_disabled_tool_is_neither_listed_nor_enabled(client, world, scene):
    calculator = scene["tools"]["calculator"]
    calculator.status = ToolStatus.DISABLED
    calculator.save()
    client.force_login(world.a.admin)
    assert "Calculator" not in client.get("/t/alpha/tools/").content.decode()
    client.post(f"/t/alpha/tools/agents/{scene['catalogue'].helpdesk.pk}/", {"tools": [calculator.pk]})
    assert enabled_keys(world.a, scene["catalogue"].helpdesk) == []


@pytest.mark.parametrize("role", ["member", "billing"])
def test_a_member_can_neither_see_nor_change_the_tools(client, world, scene, role):
    helpdesk = scene["catalogue"].helpdesk
    client.force_login(world.a.user(role))
    assert client.get("/t/alpha/tools/").status_code == 403
    response = client.post(f"/t/alpha/tools/agents/{helpdesk.pk}/", {"tools": [scene["tools"]["calculator"].pk]})
    assert response.status_code == 403
    assert enabled_keys(world.a, helpdesk) == []


def test_an_agent_the_tenant_cannot_use_is_404(client, world, scene):
    client.force_login(world.a.admin)
    not_enabled = scene["catalogue"].not_enabled
    response = client.post(f"/t/alpha/tools/agents/{not_enabled.pk}/", {"tools": [scene["tools"]["calculator"].pk]})
    assert response.status_code == 404
    assert client.post("/t/alpha/tools/agents/99999999999999999999/", {}).status_code == 404


def test_the_nav_links_the_tools_page_for_admins_only(client, world, scene):
    client.force_login(world.a.admin)
    assert 'href="/t/alpha/tools/"' in client.get("/t/alpha/").content.decode()
    client.force_login(world.a.member)
    assert 'href="/t/alpha/tools/"' not in client.get("/t/alpha/").content.decode()


# --- operator -------------------------------------------------------------------------------


def test_the_registry_lists_every_tool_for_operators_only(client, world, scene, operator):
    client.force_login(world.a.owner)
    assert client.get("/operator/tools/").status_code == 404
    client.force_login(operator)
    page = client.get("/operator/tools/").content.decode()
    for key in ("calculator", "current_time", "usage_this_month"):
        assert f'data-key="{key}"' in page


def test_an_operator_creates_a_tool_audited(client, world, scene, operator):
    client.force_login(operator)
    tier = world.a.tenant.tier
    response = client.post(
        "/operator/tools/new/",
        {
            "key": "world-clock",
            "name": "World clock",
            "description": "The time in a city's zone.",
            "handler": "current_time",
            "status": "available",
            "tiers": [tier.slug],
            "input_schema": "",
        },
    )
    assert response.status_code == 302, response.content.decode()
    tool = Tool.objects.get(key="world-clock")
    assert tool.input_schema["properties"]["timezone"]["type"] == "string"  # the handler's default
    assert list(tool.tiers.all()) == [tier]
    with all_tenants("test"):
        entry = AuditLog.unscoped.get(action="tools.tool_created")
    assert entry.actor == operator and entry.after["tiers"] == [tier.slug]


def test_an_operator_disables_a_tool_and_changes_its_schema(client, world, scene, operator):
    client.force_login(operator)
    calculator = scene["tools"]["calculator"]
    schema = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 50}}}
    response = client.post(
        "/operator/tools/calculator/",
        {
            "key": "calculator",
            "name": "Calculator",
            "description": calculator.description,
            "handler": "calculator",
            "status": "disabled",
            "tiers": [],
            "input_schema": json.dumps(schema),
        },
    )
    assert response.status_code == 302
    calculator.refresh_from_db()
    assert calculator.status == "disabled" and calculator.input_schema == schema
    assert not calculator.tiers.exists()
    with all_tenants("test"):
        entry = AuditLog.unscoped.get(action="tools.tool_updated")
    assert entry.before["status"] == "available" and entry.after["status"] == "disabled"


@pytest.mark.parametrize(
    "schema, error",
    [
        ("{not json", "Not valid JSON"),
        ('{"type": "string"}', "JSON Schema object"),
        ('{"type": "object", "properties": 5}', "not valid JSON Schema"),
        ("[]", "JSON Schema object"),
    ],
)
def test_a_bad_schema_is_a_form_error(client, world, scene, operator, schema, error):
    client.force_login(operator)
    response = client.post(
        "/operator/tools/new/",
        {
            "key": "x",
            "name": "X",
            "description": "X",
            "handler": "calculator",
            "status": "available",
            "input_schema": schema,
        },
    )
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Tool.objects.filter(key="x").exists()


def test_a_duplicate_key_or_unknown_handler_is_a_form_error(client, world, scene, operator):
    client.force_login(operator)
    base = {"name": "X", "description": "X", "status": "available", "input_schema": ""}
    assert (
        client.post("/operator/tools/new/", {**base, "key": "calculator", "handler": "calculator"}).status_code == 400
    )
    assert client.post("/operator/tools/new/", {**base, "key": "shell", "handler": "shell"}).status_code == 400
    assert client.get("/operator/tools/no-such-tool/").status_code == 404


def test_enabled_tools_survive_in_the_tenant_only(world, scene):
    enable(world.b, scene["catalogue"].helpdesk, scene["tools"]["calculator"])
    assert enabled_keys(world.a, scene["catalogue"].helpdesk) == []
    assert enabled_keys(world.b, scene["catalogue"].helpdesk) == ["calculator"]


@pytest.mark.parametrize("tier", ["-99999999999999999999999999", "99999999999999999999999", "1e999", "\x00", "1"])
def test_a_tier_that_is_no_tier_is_a_form_error_not_a_crash(client, world, scene, operator, tier):
    """Found by the garbage walk: a tier id past SQLite's integer range was a 500."""
    client.force_login(operator)
    client.raise_request_exception = False
    response = client.post(
        "/operator/tools/new/",
        {"key": "y", "name": "Y", "description": "Y", "handler": "calculator", "status": "available", "tiers": [tier]},
    )
    assert response.status_code == 400
    assert "is not one of the available choices" in response.content.decode()
    assert not Tool.objects.filter(key="y").exists()
