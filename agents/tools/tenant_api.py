"""The tenant's choice of tools per agent over the REST API: the Tools page's twin.

* ``GET /api/v1/tenants/<slug>/agent-tools/``: the tools the tenant's plan allows and,
  for each of its agents, the keys of the tools enabled for it and whether it can call
  tools at all (its workload identity may use tools:invoke). Members may read.
* ``GET /api/v1/tenants/<slug>/agent-tools/<agent id>/``: one agent.
* ``PUT /api/v1/tenants/<slug>/agent-tools/<agent id>/`` ``{"tools": ["calculator", ...]}``:
  the agent's whole set (an empty list switches tools off); owners and admins
  (MANAGE_AGENTS), through services.set_agent_tools, audited there.

An agent the tenant's members cannot use, or another tenant's, is 404; a key the plan does
not include is a 400 naming it. Kept apart from agents/tools/api.py (the runtimes' gateway).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.response import Response

from agents.tools import services
from portal.api import TenantScopedAPIMixin
from portal.drf import JSONParser
from portal.schema import one_object
from tenants.api import TENANT_SLUG
from tenants.roles import Action
from tenants.services import Actor

READ = Action.USE_AGENTS
WRITE = Action.MANAGE_AGENTS
MAX_TOOLS = 100
PROBLEM = OpenApiResponse(description="Problem JSON")


class ToolSummarySerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()


class AgentToolsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()
    tools = serializers.ListField(child=serializers.CharField(), help_text="Keys of the tools enabled for the agent.")
    can_call_tools = serializers.BooleanField(
        help_text="False when the agent's workload identity may not use tools:invoke: no tool is offered in its chats."
    )
    cannot_call_tools_reason = serializers.CharField(allow_null=True)


class AgentToolsListSerializer(serializers.Serializer):
    entitled = serializers.BooleanField(help_text="Whether the tenant's plan includes agent tools.")
    tools = ToolSummarySerializer(many=True)
    agents = AgentToolsSerializer(many=True)


class AgentToolsUpdateSerializer(serializers.Serializer):
    tools = serializers.ListField(
        child=serializers.CharField(max_length=64, allow_blank=False),
        allow_empty=True,
        max_length=MAX_TOOLS,
        help_text="The keys of every tool the agent may call (replaces the previous set).",
    )


def _agents(tenant) -> list:
    from django.db.models import prefetch_related_objects

    from agents import services as agent_services

    agents = agent_services.agents_for_members(tenant)
    prefetch_related_objects(agents, "identity")
    return agents


def _entry(agent, enabled_keys: list[str]) -> dict:
    reason = services.why_agent_cannot_call_tools(agent)
    return {
        "id": agent.pk,
        "slug": agent.slug,
        "name": agent.name,
        "tools": sorted(enabled_keys),
        "can_call_tools": reason is None,
        "cannot_call_tools_reason": reason,
    }


def _enabled_keys(tier_tools: list) -> dict[int, list[str]]:
    """Agent id → keys of its enabled tools, among those the plan allows (one query)."""
    from agents.tools.models import AgentTool

    keys = {tool.pk: tool.key for tool in tier_tools}
    enabled: dict[int, list[str]] = {}
    for agent_id, tool_id in AgentTool.objects.filter(tool_id__in=keys).values_list("agent_id", "tool_id"):
        enabled.setdefault(agent_id, []).append(keys[tool_id])
    return enabled


@extend_schema(parameters=[TENANT_SLUG])
class AgentToolsViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = AgentToolsSerializer
    parser_classes = [JSONParser]
    # The list is one document (the plan's tools and every agent's choice), not a page of rows.
    pagination_class = None
    lookup_value_regex = "[0-9]+"
    action_permissions = {"list": READ, "retrieve": READ, "update": WRITE}

    def _agent(self):
        raw = self.kwargs["pk"]
        agent_id = int(raw) if len(raw) < 19 else None  # past the column's range: no such agent
        agent = next((a for a in _agents(self.request.tenant) if a.pk == agent_id), None)
        if agent is None:
            raise exceptions.NotFound("No such agent in this organisation.")
        return agent

    @extend_schema(responses={200: one_object(AgentToolsListSerializer)})
    def list(self, request, *args, **kwargs):
        tenant = request.tenant
        tools = list(services.tier_tools(tenant))
        enabled = _enabled_keys(tools)
        body = {
            "entitled": services.entitled(tenant),
            "tools": [{"key": t.key, "name": t.name, "description": t.description} for t in tools],
            "agents": [_entry(agent, enabled.get(agent.pk, [])) for agent in _agents(tenant)],
        }
        return Response(AgentToolsListSerializer(body).data)

    @extend_schema(responses={200: AgentToolsSerializer, 404: PROBLEM})
    def retrieve(self, request, *args, **kwargs):
        agent = self._agent()
        enabled = _enabled_keys(list(services.tier_tools(request.tenant)))
        return Response(AgentToolsSerializer(_entry(agent, enabled.get(agent.pk, []))).data)

    @extend_schema(
        request=AgentToolsUpdateSerializer,
        responses={200: AgentToolsSerializer, 400: PROBLEM, 403: PROBLEM, 404: PROBLEM},
    )
    def update(self, request, *args, **kwargs):
        agent = self._agent()
        payload = AgentToolsUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        by_key = {tool.key: tool for tool in services.tier_tools(request.tenant)}
        keys = payload.validated_data["tools"]
        unknown = sorted({key for key in keys if key not in by_key})
        if unknown:
            plan = request.tenant.tier.name
            raise exceptions.ValidationError(
                {"tools": [f"The {plan} plan has no tool {', '.join(repr(k) for k in unknown)}."]}
            )
        chosen = services.set_agent_tools(Actor.from_request(request), agent, [by_key[key].pk for key in keys])
        return Response(AgentToolsSerializer(_entry(agent, [tool.key for tool in chosen])).data)
