"""An agent whose workload identity may not use tools:invoke cannot call tools, whatever the
tenant ticks: the turn's token exchange only asks for the scopes the identity allows, so no
tool is offered. The Tools page says so per agent (and which scope an operator must grant),
and enabling tools for such an agent is refused with the reason, not stored as "on"."""

from __future__ import annotations

import pytest

from agents.tools import services
from agents.tools.models import AgentTool
from tenants.context import tenant_context
from tenants.models import AuditLog
from tenants.services import Actor, ServiceError
from tests.agents.helpers import make_catalogue
from tests.tools.helpers import allow_tools_scope, make_tools


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)  # identities stop at agents:invoke kb:read
    return {"catalogue": catalogue, "tools": make_tools(world.a.tenant.tier)}


def enabled_keys(side, agent) -> list[str]:
    with tenant_context(side.tenant):
        return sorted(AgentTool.objects.filter(agent=agent).values_list("tool__key", flat=True))


def test_it_tells_the_admin_which_agent_cannot_call_tools_and_which_scope_is_missing(client, world, scene):
    helpdesk = scene["catalogue"].helpdesk
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/tools/").content.decode()
    assert f'id="agent-{helpdesk.pk}-cannot-call-tools"' in page
    assert "cannot call tools" in page
    assert "<code>tools:invoke</code>" in page


def test_it_says_nothing_once_the_identity_may_call_tools(client, world, scene):
    helpdesk = scene["catalogue"].helpdesk
    allow_tools_scope(helpdesk)
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/tools/").content.decode()
    assert "cannot-call-tools" not in page


def test_it_refuses_to_enable_tools_for_an_agent_that_cannot_call_them(client, world, scene):
    helpdesk, calculator = scene["catalogue"].helpdesk, scene["tools"]["calculator"]
    client.force_login(world.a.admin)
    response = client.post(f"/t/alpha/tools/agents/{helpdesk.pk}/", {"tools": [calculator.pk]}, follow=True)
    assert "cannot call tools" in response.content.decode()
    assert "now uses" not in response.content.decode()
    assert enabled_keys(world.a, helpdesk) == []
    with tenant_context(world.a.tenant):
        assert not AuditLog.objects.filter(action="tools.agent_tools_changed").exists()


def test_the_service_refuses_with_a_service_error(world, scene):
    helpdesk, calculator = scene["catalogue"].helpdesk, scene["tools"]["calculator"]
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="tools:invoke"):
        services.set_agent_tools(actor, helpdesk, [calculator.pk])


def test_it_still_lets_the_admin_switch_tools_off_for_such_an_agent(client, world, scene):
    helpdesk, calculator = scene["catalogue"].helpdesk, scene["tools"]["calculator"]
    with tenant_context(world.a.tenant):
        AgentTool.objects.create(agent=helpdesk, tool=calculator)  # enabled before the identity was narrowed
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/tools/").content.decode()
    assert "not offered" in page
    client.post(f"/t/alpha/tools/agents/{helpdesk.pk}/", {})
    assert enabled_keys(world.a, helpdesk) == []
