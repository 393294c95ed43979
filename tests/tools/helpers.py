"""Tools test data: the three built-in tools in the registry, enabled per tenant and agent."""

from __future__ import annotations

from agents.tools.handlers import SCHEMAS
from agents.tools.models import AgentTool, Tool
from tenants.context import all_tenants, tenant_context

DESCRIPTIONS = {
    "calculator": "Evaluate an arithmetic expression exactly.",
    "current_time": "The current date and time in an IANA time zone.",
    "usage_this_month": "Your organisation's tokens and bill so far this month.",
}


def make_tools(*tiers) -> dict[str, Tool]:
    """The built-in tools, available to `tiers`, whose plans now include agent tools."""
    for tier in tiers:
        if "tools" not in tier.default_features:
            tier.default_features = [*tier.default_features, "tools"]
            tier.save(update_fields=["default_features"])
    tools = {}
    for key, description in DESCRIPTIONS.items():
        tool = Tool.objects.create(
            key=key, name=key.replace("_", " ").title(), description=description, handler=key, input_schema=SCHEMAS[key]
        )
        tool.tiers.set(tiers)
        tools[key] = tool
    return tools


def allow_tools_scope(agent) -> None:
    """Let the agent's workload identity use tools:invoke (the catalogue's identities stop at kb:read)."""
    identity = agent.identity
    with all_tenants("test: agent identity scopes"):
        identity.allowed_scopes = sorted({*identity.allowed_scopes, "tools:invoke"})
        identity.save(update_fields=["allowed_scopes"])


def enable(side, agent, *tools: Tool) -> None:
    with tenant_context(side.tenant):
        for tool in tools:
            AgentTool.objects.create(agent=agent, tool=tool)
