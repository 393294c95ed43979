"""Chat over the REST API: conversations, messages (202 + invocation id), turn status and its SSE stream."""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from agents import services
from agents.models import Invocation, Message
from agents.serializers import (
    AgentSerializer,
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    InvocationSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    TurnAcceptedSerializer,
)
from agents.views import _last_event_id, sse_response, stream_url
from billing.limits import LimitExceeded
from portal.api import CLIENT_CANNOT_CHAT, PROBLEM_CONTENT_TYPE, TenantScopedAPIMixin, problem
from tenants.api import TENANT_SLUG
from tenants.roles import Action
from tenants.services import Actor

CHAT = {
    "list": Action.USE_AGENTS,
    "retrieve": Action.USE_AGENTS,
    "create": Action.USE_AGENTS,
    "partial_update": Action.USE_AGENTS,
    "destroy": Action.USE_AGENTS,
    "messages": Action.USE_AGENTS,
    "events": Action.USE_AGENTS,
    "cancel": Action.USE_AGENTS,
    "retry": Action.USE_AGENTS,
}


class EventStreamRenderer(renderers.JSONRenderer):
    """Lets content negotiation accept `Accept: text/event-stream`, which EventSource
    always sends (JSON alone answers it 406). The stream itself is a
    StreamingHttpResponse that no renderer touches; an error before it starts is
    still a JSON problem body."""

    media_type = "text/event-stream"
    format = "sse"


def _actor(request) -> Actor:
    if request.membership is None:  # TenantScopedAPIMixin refuses a client first; kept as a backstop
        from rest_framework.exceptions import PermissionDenied

        raise PermissionDenied(CLIENT_CANNOT_CHAT)
    return Actor.from_request(request)


@extend_schema(parameters=[TENANT_SLUG])
class AgentViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = AgentSerializer
    action_permissions = {"list": Action.USE_AGENTS}

    def list(self, request, *args, **kwargs):
        agents = services.agents_for_members(request.tenant)
        return Response({"count": len(agents), "results": AgentSerializer(agents, many=True).data})


@extend_schema(parameters=[TENANT_SLUG])
class ConversationViewSet(TenantScopedAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = ConversationSerializer
    action_permissions = CHAT

    def get_queryset(self):
        return services.owned_conversations(self.request.user).select_related("agent")

    def get_object(self):
        conversation = services.access_conversation(_actor(self.request), self.kwargs["pk"])
        if conversation is None:
            raise NotFound()
        return conversation

    def retrieve(self, request, *args, **kwargs):
        return Response(ConversationSerializer(self.get_object()).data)

    @extend_schema(request=ConversationCreateSerializer, responses={201: ConversationSerializer})
    def create(self, request, *args, **kwargs):
        payload = ConversationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        conversation = services.start_conversation(_actor(request), payload.validated_data["agent"])
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ConversationUpdateSerializer,
        responses={
            200: ConversationSerializer,
            409: OpenApiResponse(description="The conversation was deleted meanwhile (problem JSON)."),
        },
        description="Rename the conversation (its owner only; anyone else gets 404).",
    )
    def partial_update(self, request, *args, **kwargs):
        conversation = self.get_object()
        payload = ConversationUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        conversation = services.rename_conversation(_actor(request), conversation, payload.validated_data["title"])
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(
        request=None,
        responses={
            204: OpenApiResponse(description="Deleted: its text erased, gone from every list and lookup."),
            409: OpenApiResponse(
                description="An answer is still being written (stop it or wait), or it was just deleted (problem JSON)."
            ),
        },
        description=(
            "Delete the conversation (its owner only). Its messages and title are erased and it disappears "
            "from the API and the portal; the turns behind its usage events are kept, emptied of text, so "
            "usage and invoices do not change."
        ),
    )
    def destroy(self, request, *args, **kwargs):
        conversation = self.get_object()
        try:
            services.delete_conversation(_actor(request), conversation)
        except services.ConversationConflict as busy:
            body = problem(busy.status, detail=busy.text)
            return Response(body, status=busy.status, content_type=PROBLEM_CONTENT_TYPE)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        # Every message in one answer, not paged: the schema said a paged list (count,
        # limit, offset) that the answer never was.
        responses=inline_serializer("MessageList", {"results": MessageSerializer(many=True)}),
        description="The conversation's messages, oldest first, all in one answer.",
    )
    @extend_schema(
        methods=["POST"],
        request=MessageCreateSerializer,
        responses={
            202: TurnAcceptedSerializer,
            402: OpenApiResponse(description="Monthly token quota or budget used up (problem JSON, Retry-After)."),
            409: OpenApiResponse(
                description="The conversation was deleted while the message was being posted (problem JSON)."
            ),
            413: OpenApiResponse(
                description="The turn alone is more than a minute's tokens: start a new conversation (problem JSON)."
            ),
            429: OpenApiResponse(description="Rate or concurrency limit (problem JSON, Retry-After header)."),
        },
        description=(
            "Post a message: the turn is queued and answered asynchronously; follow stream_url (SSE), "
            "whose stream token (`st`) opens that turn's events without other credentials for 10 minutes."
        ),
    )
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def messages(self, request, *args, **kwargs):
        conversation = self.get_object()
        if request.method == "GET":
            rows = Message.objects.filter(conversation=conversation).order_by("created_at", "id")
            return Response({"results": MessageSerializer(rows, many=True).data})
        payload = MessageCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            invocation = services.post_message(_actor(request), conversation, payload.validated_data["text"])
        except LimitExceeded as refusal:
            return limit_problem(refusal)
        events = f"/api/v1/tenants/{request.tenant.slug}/invocations/{invocation.pk}/events/"
        body = {
            "invocation_id": str(invocation.pk),
            "status": invocation.status,
            # With a stream token, which portal.asgi serves without a second authentication.
            "stream_url": stream_url(events, request.tenant, invocation.pk, request.user.pk),
            "message_id": invocation.assistant_message_id,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


# A turn's id is a UUID. The route takes any segment, so that an id that is not one is the
# same 404 problem as one that does not exist (get_object), rather than a resolver miss.
INVOCATION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The turn's id")


@extend_schema(parameters=[TENANT_SLUG, INVOCATION_ID])
class InvocationViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = InvocationSerializer
    action_permissions = CHAT
    lookup_value_regex = "[^/]+"

    def get_object(self):
        try:
            pk = uuid.UUID(str(self.kwargs["pk"]))
        except ValueError:
            raise NotFound()
        invocation = Invocation.objects.filter(
            pk=pk, user_id=self.request.user.pk, conversation__deleted_at__isnull=True
        ).first()
        if invocation is None:
            raise NotFound()
        return invocation

    def retrieve(self, request, *args, **kwargs):
        return Response(InvocationSerializer(self.get_object()).data)

    @extend_schema(
        responses={(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="Server-Sent Events")},
        description=(
            "The turn's events as text/event-stream; reconnect with Last-Event-ID to resume. "
            "Authenticated as any call, or by the stream token (`st`) of the stream_url a posted message answers with."
        ),
    )
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, EventStreamRenderer])
    def events(self, request, *args, **kwargs):
        invocation = self.get_object()
        return sse_response(request.tenant, invocation.pk, _last_event_id(request), request.user.pk)

    @extend_schema(request=None, responses={202: InvocationSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        invocation = self.get_object()
        services.cancel_turn(_actor(request), invocation)
        invocation.refresh_from_db()
        return Response(InvocationSerializer(invocation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={
            202: InvocationSerializer,
            402: OpenApiResponse(description="Monthly token quota or budget used up (problem JSON, Retry-After)."),
            409: OpenApiResponse(description="The conversation was deleted meanwhile (problem JSON)."),
            413: OpenApiResponse(
                description="The turn alone is more than a minute's tokens: start a new conversation (problem JSON)."
            ),
            429: OpenApiResponse(description="Rate or concurrency limit (problem JSON, Retry-After header)."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, *args, **kwargs):
        try:
            invocation = services.retry_turn(_actor(request), self.get_object())
        except LimitExceeded as refusal:
            return limit_problem(refusal)
        return Response(InvocationSerializer(invocation).data, status=status.HTTP_202_ACCEPTED)


def limit_problem(refusal: LimitExceeded) -> Response:
    """A refused turn as problem JSON: 429 (rate/concurrency) or 402 (quota/budget), with Retry-After;
    413 (one turn larger than a minute's tokens), without: waiting would not help."""
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else {}
    detail = " ".join(refusal.messages)
    body = problem(refusal.status, title="Limit reached", detail=detail, code=refusal.code, limit=str(refusal.kind))
    return Response(body, status=refusal.status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)
