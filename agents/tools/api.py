"""The tools gateway agent runtimes call during a turn.

`POST /api/v1/gateway/tools/invoke` {tool, input, agent?} with the act-on-behalf
token (aud agent-runtime, scope tools:invoke) as the only credential, like the
knowledge gateway: the tenant and the acting user are the token's, so a token of
one tenant can run only the tools that tenant enabled for the acting agent, and
a tool that reads tenant data (usage_this_month) reads the token tenant's.
Every refusal is problem JSON {type,title,status,detail}.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.tools import services
from tenants.identity.gateway import GatewayView, bearer


class ToolInvokeSerializer(serializers.Serializer):
    tool = serializers.SlugField(max_length=64, help_text="The tool's key, as the turn offered it.")
    input = serializers.JSONField(help_text="The tool's input: a JSON object its input_schema accepts.")
    agent = serializers.SlugField(
        max_length=60, required=False, allow_blank=True, default="", help_text="The acting agent's slug."
    )


class ToolResultSerializer(serializers.Serializer):
    result = serializers.JSONField()


class ToolGatewayView(GatewayView):
    """Run a tool for an agent acting for a user; the answer is {result} or problem JSON."""

    @extend_schema(
        request=ToolInvokeSerializer,
        responses={
            200: ToolResultSerializer,
            400: OpenApiResponse(description="Problem JSON: bad input"),
            401: OpenApiResponse(description="Problem JSON: no valid act-on-behalf token"),
            403: OpenApiResponse(description="Problem JSON: scope, tenant, tier or agent refuses the tool"),
            404: OpenApiResponse(description="Problem JSON: no such tool"),
        },
        operation_id="tools_gateway_invoke",
        tags=["gateway"],
    )
    def post(self, request):
        raw = bearer(request)  # before the body: an anonymous caller learns nothing of the input rules
        serializer = ToolInvokeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.invoke_for_token(
            raw, tool_key=data["tool"], tool_input=data["input"], agent_slug=data.get("agent", "")
        )
        return Response({"result": result})
