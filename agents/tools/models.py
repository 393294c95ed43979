"""The tool registry (the operator's, platform-wide) and which tools a tenant lets each agent use.

* `Tool` is platform data (PlatformModel): a key the model calls it by, what it
  does, the JSON Schema of its input, the built-in handler that runs it in the
  portal's gateway, the tiers whose tenants may use it, and whether it is
  available at all.
* `AgentTool` is tenant-owned (TenantOwnedModel: scoped manager, row-level
  security on PostgreSQL): a tenant admin enabled `tool` for `agent` in their
  tenant. A shared agent has different tools in each tenant.
"""

from __future__ import annotations

from django.db import models

from tenants.scoping import PlatformModel, TenantOwnedModel


class Handler(models.TextChoices):
    CALCULATOR = "calculator", "Calculator"
    CURRENT_TIME = "current_time", "Current time"
    USAGE_THIS_MONTH = "usage_this_month", "Usage this month"


class ToolStatus(models.TextChoices):
    AVAILABLE = "available", "Available"
    DISABLED = "disabled", "Disabled"


def default_schema() -> dict:
    return {"type": "object", "properties": {}}


class Tool(PlatformModel):
    # What the model calls it by (ToolSpec.name): 1–64 of [a-zA-Z0-9_-]; a slug fits.
    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=1000)
    input_schema = models.JSONField(default=default_schema)
    handler = models.CharField(max_length=20, choices=Handler.choices)
    tiers = models.ManyToManyField("tenants.Tier", blank=True, related_name="+")
    status = models.CharField(max_length=10, choices=ToolStatus.choices, default=ToolStatus.AVAILABLE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def available(self) -> bool:
        return self.status == ToolStatus.AVAILABLE


class AgentTool(TenantOwnedModel):
    """Tenant-owned: `tool` is enabled for `agent` in this tenant (by a tenant admin)."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "agent", "tool"], name="agent_tool_unique")]
