"""The tools gateway agent runtimes call during a turn.

`POST /api/v1/gateway/tools/invoke` {tool, input, agent?, tenant_id?} with the act-on-behalf
token (aud agent-runtime, scope tools:invoke) as the only credential, like the
knowledge gateway: the tenant and the acting user are the token's, so a token of
one tenant can run only the tools that tenant enabled for the acting agent, and
a tool that reads tenant data (usage_this_month) reads the token tenant's. A
`tenant_id` the runtime names (the MCP route: `?tenant_id=`) must be the token's.
Every refusal is problem JSON {type,title,status,detail}.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.tools import mcp, services
from portal.api import problem_response
from tenants.identity.gateway import GatewayView, acting, authorize, bearer


class ToolInvokeSerializer(serializers.Serializer):
    tool = serializers.SlugField(max_length=64, help_text="The tool's key, as the turn offered it.")
    input = serializers.JSONField(help_text="The tool's input: a JSON object its input_schema accepts.")
    agent = serializers.SlugField(
        max_length=60, required=False, allow_blank=True, default="", help_text="The acting agent's slug."
    )
    tenant_id = serializers.CharField(
        max_length=20, required=False, help_text="If given, must be the tenant of the token (the runtime's header)."
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
            raw,
            tool_key=data["tool"],
            tool_input=data["input"],
            agent_slug=data.get("agent", ""),
            tenant_id=data.get("tenant_id"),
        )
        return Response({"result": result})


class McpGatewayView(GatewayView):
    """The tools gateway as an MCP server (Streamable HTTP, revision 2025-06-18): agents/tools/mcp.py."""

    def perform_content_negotiation(self, request, force=False):
        # An MCP client's GET asks for text/event-stream only; the transport wants 405 for it
        # (no server stream here), not 406, so refusals are rendered as JSON whatever it accepts.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        summary="MCP (Model Context Protocol) endpoint of the tools gateway",
        description=(
            "One JSON-RPC 2.0 message per POST (Streamable HTTP transport, MCP revision 2025-06-18): "
            "initialize, notifications/initialized, ping, tools/list, tools/call. The bearer is the "
            "agent's act-on-behalf token with tools:invoke; it is checked before any JSON-RPC is read. "
            "Requests are answered with a JSON-RPC response (application/json), notifications with 202. "
            "GET answers 405: the server opens no stream of its own."
        ),
        parameters=[
            OpenApiParameter(
                "agent", str, OpenApiParameter.QUERY, required=False, description="The acting agent's slug."
            ),
            OpenApiParameter(
                "tenant_id",
                str,
                OpenApiParameter.QUERY,
                required=False,
                description="If given, must be the tenant of the token (the runtime's header).",
            ),
            OpenApiParameter(
                "MCP-Protocol-Version", str, OpenApiParameter.HEADER, required=False, description="2025-06-18"
            ),
        ],
        request=OpenApiTypes.OBJECT,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="A JSON-RPC 2.0 response"),
            202: OpenApiResponse(description="A notification or response accepted; no body"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="JSON-RPC parse error, invalid request, batch"),
            401: OpenApiResponse(description="Problem JSON: no valid act-on-behalf token"),
            403: OpenApiResponse(description="Problem JSON: scope missing, or not the tenant's agent"),
        },
        examples=[
            OpenApiExample(
                "tools/call",
                request_only=True,
                value={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "calculator", "arguments": {"expression": "6*7"}},
                },
            )
        ],
        operation_id="tools_gateway_mcp",
        tags=["gateway"],
    )
    def post(self, request):
        token = authorize(
            bearer(request), services.SCOPE, tenant_id=request.query_params.get("tenant_id"), name="mcp gateway"
        )
        version = request.headers.get("MCP-Protocol-Version")
        if version is not None and version not in mcp.ACCEPTED_HEADER_VERSIONS:
            return problem_response(
                400, None, f"Unsupported MCP-Protocol-Version; this server speaks {mcp.PROTOCOL_VERSION}."
            )
        with acting(token, request.query_params.get("agent", "")) as call:
            return mcp.handle(request.body, call)
