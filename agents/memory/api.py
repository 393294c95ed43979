"""The memory gateway agent runtimes call with their act-on-behalf token.

* ``POST /api/v1/gateway/memory/recall``   {query, k, agent?, tenant_id?} → {memories}
* ``POST /api/v1/gateway/memory/remember`` {content, agent?, scope?, tenant_id?} → 201 {memory}

The token is validated in services.recall_for_token / remember_for_token (aud
agent-runtime, memory:read / memory:write), the same functions the in-process
gateway of the local runtime calls. Refusals are problem JSON.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from agents.memory import services
from agents.memory.serializers import (
    GatewayRecallSerializer,
    GatewayRememberSerializer,
    MemoryListSerializer,
    MemorySerializer,
)
from tenants.identity.gateway import GatewayView, bearer

PROBLEM = OpenApiResponse(description="Problem JSON")


class MemoryRecallView(GatewayView):
    """The acting member's memories that match a query (theirs for the agent, theirs for
    all agents, the tenant's shared ones), best first."""

    @extend_schema(
        request=GatewayRecallSerializer,
        responses={200: MemoryListSerializer, 401: PROBLEM, 403: PROBLEM, 503: PROBLEM},
        operation_id="memory_gateway_recall",
        tags=["gateway"],
    )
    def post(self, request):
        raw = bearer(request)
        serializer = GatewayRecallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        memories = services.recall_for_token(
            raw, query=data["query"], k=data["k"], agent_slug=data["agent"], tenant_id=data.get("tenant_id")
        )
        return Response({"memories": memories})


class MemoryRememberView(GatewayView):
    """Store one fact on behalf of the acting member."""

    @extend_schema(
        request=GatewayRememberSerializer,
        responses={201: MemorySerializer, 401: PROBLEM, 403: PROBLEM, 503: PROBLEM},
        operation_id="memory_gateway_remember",
        tags=["gateway"],
    )
    def post(self, request):
        raw = bearer(request)
        serializer = GatewayRememberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        memory = services.remember_for_token(
            raw,
            content=data["content"],
            agent_slug=data["agent"],
            scope=data["scope"],
            tenant_id=data.get("tenant_id"),
        )
        return Response(memory, status=status.HTTP_201_CREATED)


# Included in portal/urls.py's api_v1 (under /api/v1/).
gateway_urls = [
    path("gateway/memory/recall", MemoryRecallView.as_view(), name="memory-gateway-recall"),
    path("gateway/memory/remember", MemoryRememberView.as_view(), name="memory-gateway-remember"),
]
