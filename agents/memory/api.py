"""Long-term memory over the REST API: a person's memories, and the memory gateway of agents.

* ``/api/v1/tenants/<slug>/memories/``: the caller's own memories and the tenant's shared
  ones (GET, paged, filters scope/agent/q), add one (POST), delete one (DELETE <id>/);
* ``/api/v1/tenants/<slug>/memory-members/``: owners and admins see how many memories each
  member has (never their contents) and clear a member's memory.

The same services and policy (agents/memory/policy.py) as the Memory page decide, for both
stores (the portal's table, or the tenant's AgentCore Memory), and audit with its labels.
Memory is a member's (ARCHITECTURE.md §4: agents act for a person), so a person's token
or session may use it: memory:read to read, memory:write to change (the scopes the
member's role carries with agents.use; a token narrowed to either is honoured); an API
client has no memories and is refused. AgentCore Memory failing is a 503 (try again) or
a 502 (AWS refused the portal's set-up) problem, never a 500.

The memory gateway agent runtimes call with their act-on-behalf token:

* ``POST /api/v1/gateway/memory/recall``   {query, k, agent?, tenant_id?} → {memories}
* ``POST /api/v1/gateway/memory/remember`` {content, agent?, scope?, tenant_id?} → 201 {memory}

The token is validated in services.recall_for_token / remember_for_token (aud
agent-runtime, memory:read / memory:write), the same functions the in-process
gateway of the local runtime calls. Refusals are problem JSON.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.memory import policy, services
from agents.memory.serializers import (
    ClearedSerializer,
    GatewayRecallSerializer,
    GatewayRememberSerializer,
    MemberMemorySerializer,
    MemoryCreateSerializer,
    MemoryEntrySerializer,
    MemoryListSerializer,
    MemorySerializer,
)
from portal.api import PROBLEM_CONTENT_TYPE, TenantScopedAPIMixin, choice_param, problem
from tenants.access import access_membership
from tenants.api import TENANT_SLUG
from tenants.identity.gateway import GatewayView, bearer
from tenants.roles import Action
from tenants.services import Actor

PROBLEM = OpenApiResponse(description="Problem JSON")

READ_SCOPE, WRITE_SCOPE = services.READ_SCOPE, services.WRITE_SCOPE
CLIENT_HAS_NO_MEMORY = (
    "Memory is a member's: agents keep and recall it on behalf of a person, never for an API client. "
    "Use a member's access token."
)
MAX_QUERY_PARAM = 200
STORE_FAILED = {
    503: OpenApiResponse(description="AgentCore Memory could not be reached or throttled: try again (problem JSON)."),
    502: OpenApiResponse(description="AgentCore Memory refused the portal's set-up (problem JSON)."),
}


class StoreFailed(Exception):
    def __init__(self, response: Response):
        self.response = response


def _store_call(call):
    """`call()`, with AgentCore Memory failing as a 503 problem (waiting may help, Retry-After)
    or a 502 (AWS refused the portal: its operator must fix the set-up)."""
    try:
        return call()
    except services.MemoryStoreError as exc:
        code = 503 if exc.transient else 502
        title = "Memory store unavailable" if exc.transient else "Memory store refused the portal"
        headers = {"Retry-After": "30"} if exc.transient else {}
        body = problem(code, title=title, detail=exc.text)
        raise StoreFailed(Response(body, status=code, headers=headers, content_type=PROBLEM_CONTENT_TYPE))


class _MemoryAPI(TenantScopedAPIMixin, viewsets.GenericViewSet):
    client_refusal = CLIENT_HAS_NO_MEMORY

    def handle_exception(self, exc):
        if isinstance(exc, StoreFailed):
            return exc.response
        return super().handle_exception(exc)


def _agents_by_slug(tenant) -> dict:
    from agents import services as agent_services

    return {agent.slug: agent for agent in agent_services.agents_for_members(tenant)}


MEMORY_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The memory's id, as the list answers it"
)
LIST_FILTERS = [
    OpenApiParameter("scope", str, enum=list(services.LIST_SCOPES), required=False, description="mine or shared"),
    OpenApiParameter("agent", str, required=False, description="Only your memories for this agent (its slug)"),
    OpenApiParameter("q", str, required=False, description="Only memories whose text contains this (any case)"),
]


@extend_schema(parameters=[TENANT_SLUG])
@extend_schema_view(destroy=extend_schema(parameters=[MEMORY_ID]))
class MemoryViewSet(_MemoryAPI):
    serializer_class = MemoryEntrySerializer
    action_permissions = {"list": Action.USE_AGENTS, "create": Action.USE_AGENTS, "destroy": Action.USE_AGENTS}
    action_scopes = {"list": READ_SCOPE, "create": WRITE_SCOPE, "destroy": WRITE_SCOPE}
    # Any segment, so that an id of neither shape is the same 404 problem as a missing one.
    lookup_value_regex = "[^/]+"

    @extend_schema(
        parameters=LIST_FILTERS,
        responses={200: MemoryEntrySerializer(many=True), **STORE_FAILED},
        description=(
            "Your own memories and the tenant's shared ones, newest first, a page at a time (never a "
            "colleague's). For a tenant on AgentCore Memory, at most 1,000 of each kind are listed (the first "
            "that AgentCore Memory answers); `truncated` is true when it holds more. Its pages come from one "
            "listing kept for a minute: what you or your agents change through the portal shows at once, what "
            "AgentCore Memory derives on its own within that minute."
        ),
    )
    def list(self, request, *args, **kwargs):
        scope = choice_param(request, "scope", services.LIST_SCOPES)
        agents = _agents_by_slug(request.tenant)
        slug = choice_param(request, "agent", sorted(agents))
        query = request.query_params.get("q", "")
        if len(query) > MAX_QUERY_PARAM or "\x00" in query:
            raise exceptions.ValidationError({"q": [f"At most {MAX_QUERY_PARAM} characters, without NUL."]})
        actor = Actor.from_request(request)
        listed = _store_call(
            lambda: services.memories_of(actor, scope=scope, agent=agents.get(slug) if slug else None, query=query)
        )
        page = self.paginate_queryset(listed.items)
        response = self.get_paginated_response(MemoryEntrySerializer([i.to_dict() for i in page], many=True).data)
        # Whether AgentCore Memory holds more than it listed: never for the portal's table.
        response.data["truncated"] = listed.truncated
        return response

    @extend_schema(
        request=MemoryCreateSerializer,
        responses={201: MemoryEntrySerializer, **STORE_FAILED},
        description=(
            "Keep a fact: yours for one agent or for all, or (owners and admins) the tenant's shared one. "
            "Recorded in the audit log without its text."
        ),
    )
    def create(self, request, *args, **kwargs):
        if not services.entitled(request.tenant):
            raise exceptions.PermissionDenied(f"Long-term memory is not part of the {request.tenant.tier.name} plan.")
        payload = MemoryCreateSerializer(data=request.data, context={"agents": _agents_by_slug(request.tenant)})
        payload.is_valid(raise_exception=True)
        data, actor = payload.validated_data, Actor.from_request(request)
        item = _store_call(
            lambda: services.add_memory(actor, data["content"], scope=data["scope"], agent=data["agent"])
        )
        return Response(MemoryEntrySerializer(item.to_dict()).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={204: None, **STORE_FAILED},
        description=(
            "Delete one of your memories, or (owners and admins) a shared one. A colleague's memory, or "
            "another tenant's, is not found."
        ),
    )
    def destroy(self, request, *args, **kwargs):
        actor = Actor.from_request(request)
        if not _store_call(lambda: services.delete_memory(actor, self.kwargs["pk"])):
            raise exceptions.NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)


MEMBERSHIP_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The membership's id")


def _row(row: dict) -> dict:
    return {
        "membership_id": row["membership"].pk,
        "email": row["user"].email,
        "role": row["membership"].role,
        "count": row["count"],
        "more": row["more"],
    }


@extend_schema(parameters=[TENANT_SLUG])
@extend_schema_view(retrieve=extend_schema(parameters=[MEMBERSHIP_ID]), clear=extend_schema(parameters=[MEMBERSHIP_ID]))
class MemoryMemberViewSet(_MemoryAPI):
    """Owners and admins: how many memories each member has (never the contents); clear them."""

    serializer_class = MemberMemorySerializer
    action_permissions = {"list": Action.USE_AGENTS, "retrieve": Action.USE_AGENTS, "clear": Action.USE_AGENTS}
    action_scopes = {"list": READ_SCOPE, "retrieve": READ_SCOPE, "clear": WRITE_SCOPE}
    lookup_value_regex = "[^/]+"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not policy.can_administer(request.membership.role):
            raise exceptions.PermissionDenied(services.ADMINISTERS_ONLY)

    @extend_schema(
        description=(
            "Each member with how many memories they have. For a tenant on AgentCore Memory `count` is null "
            "here (counting takes calls per member): ask for one member's count."
        )
    )
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(services.counts_per_member())
        return self.get_paginated_response(MemberMemorySerializer([_row(r) for r in page], many=True).data)

    @extend_schema(responses={200: MemberMemorySerializer, **STORE_FAILED})
    def retrieve(self, request, *args, **kwargs):
        membership = access_membership(self.kwargs["pk"])
        actor = Actor.from_request(request)
        count, more = _store_call(lambda: services.count_member_memory(actor, membership))
        row = {"membership": membership, "user": membership.user, "count": count, "more": more}
        return Response(MemberMemorySerializer(_row(row)).data)

    @extend_schema(
        request=None,
        responses={200: ClearedSerializer, **STORE_FAILED},
        description="Delete every memory of the member (recorded in the audit log).",
    )
    @action(detail=True, methods=["post"])
    def clear(self, request, *args, **kwargs):
        membership = access_membership(self.kwargs["pk"])
        actor = Actor.from_request(request)
        cleared = _store_call(lambda: services.clear_member_memory(actor, membership))
        body = {
            "deleted": cleared.deleted,
            "failed": cleared.failed,
            "more": cleared.more,
            "detail": services.cleared_message(cleared, membership.user.email),
        }
        return Response(ClearedSerializer(body).data)


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
