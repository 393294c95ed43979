"""The demo seed gives the demo tenants' agents tools per tier, once."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.tools.models import AgentTool, Tool
from tenants.context import tenant_context
from tenants.models import Tenant


def tools_by_agent(slug: str) -> dict[str, list[str]]:
    tenant = Tenant.objects.get(slug=slug)
    with tenant_context(tenant):
        # Read inside the context: on PostgreSQL row-level security applies when the query runs.
        rows = list(AgentTool.objects.values_list("agent__slug", "tool__key").order_by("agent__slug", "tool__key"))
    out: dict[str, list[str]] = {}
    for agent, tool in rows:
        out.setdefault(agent, []).append(tool)
    return out


@pytest.mark.django_db
def test_the_demo_tenants_get_tools_per_tier_and_a_second_run_adds_nothing(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path
    call_command("seed_demo", verbosity=0)
    assert sorted(Tool.objects.values_list("key", flat=True)) == ["calculator", "current_time", "usage_this_month"]
    assert tools_by_agent("acme") == {}  # Basic has no tools
    assert tools_by_agent("globex") == {"analyst": ["calculator"], "helpdesk": ["calculator", "current_time"]}
    assert tools_by_agent("initech") == {
        "analyst": ["calculator"],
        "helpdesk": ["calculator", "current_time", "usage_this_month"],
        "tps-reports": ["calculator", "current_time"],
    }
    before = {slug: tools_by_agent(slug) for slug in ("acme", "globex", "initech")}
    call_command("seed_demo", verbosity=0)
    assert {slug: tools_by_agent(slug) for slug in ("acme", "globex", "initech")} == before
