"""Demo tools: the three built-in tools in the registry, on the tiers with the `tools`
feature, and enabled on the demo tenants' agents per tier. Idempotent: looked up by key,
and an agent's tools are chosen only when it has none (a choice made in the UI stays)."""

from __future__ import annotations

from agents.models import Agent, AgentStatus
from agents.tools.handlers import SCHEMAS
from agents.tools.models import AgentTool, Tool
from tenants.context import all_tenants, tenant_context
from tenants.models import Tenant, Tier

TOOLS = [
    (
        "calculator",
        "Calculator",
        "Evaluate an arithmetic expression exactly (+ - * / // % ** and brackets).",
        ["standard", "premium"],
    ),
    (
        "current_time",
        "Current time",
        "The current date and time in an IANA time zone such as Europe/Paris.",
        ["standard", "premium"],
    ),
    (
        "usage_this_month",
        "Usage this month",
        "Your organisation's tokens and bill so far this month (for owners, admins and billing).",
        ["premium"],
    ),
]

# Which tools each demo agent uses, where its tenant's tier allows them.
AGENT_TOOLS = {
    "helpdesk": ["calculator", "current_time", "usage_this_month"],
    "analyst": ["calculator"],
    "tps-reports": ["calculator", "current_time"],
}
SCOPE = "tools:invoke"


def seed_tools() -> int:
    created = 0
    tools = {}
    for key, name, description, tier_slugs in TOOLS:
        tool, new = Tool.objects.get_or_create(
            key=key, defaults={"name": name, "description": description, "handler": key, "input_schema": SCHEMAS[key]}
        )
        if new:
            tool.tiers.set(Tier.objects.filter(slug__in=tier_slugs))
        tools[key] = tool
        created += new
    with all_tenants("demo seed: agents may run tools"):
        for agent in Agent.unscoped.filter(slug__in=AGENT_TOOLS, identity__isnull=False).select_related("identity"):
            identity = agent.identity
            if identity.allowed_scopes and SCOPE not in identity.allowed_scopes:
                identity.allowed_scopes = sorted({*identity.allowed_scopes, SCOPE})
                identity.save(update_fields=["allowed_scopes"])
    from agents.services import agents_for_members
    from agents.tools.services import tier_tools

    for tenant in Tenant.objects.select_related("tier").order_by("pk"):
        with tenant_context(tenant):
            allowed = {tool.key: tool for tool in tier_tools(tenant)}
            for agent in agents_for_members(tenant):
                if agent.status != AgentStatus.PUBLISHED or AgentTool.objects.filter(agent=agent).exists():
                    continue
                chosen = [allowed[key] for key in AGENT_TOOLS.get(agent.slug, []) if key in allowed]
                AgentTool.objects.bulk_create(
                    [AgentTool(tenant_id=tenant.pk, agent=agent, tool=tool) for tool in chosen]
                )
                created += len(chosen)
    return created
