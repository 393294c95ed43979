"""Knowledge bases over the REST API, and the retrieval gateway agents call.

* `/api/v1/tenants/<slug>/knowledge-bases/` and `/knowledge-documents/`: the
  admin's verbs (create, upload, delete) and reads, through the same services as
  the UI; tenant resolved and roles checked by TenantScopedAPIMixin.
* `/api/v1/gateway/knowledge/retrieve`: what an agent runtime calls during a
  turn with its act-on-behalf token (aud agent-runtime, scope kb:read). The
  tenant is the token's; a `tenant_id` in the body that names another tenant is
  refused. It is not under a tenant slug because the runtime knows the tenant
  only by id (its headers and token), never by slug.
"""

from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, parsers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.knowledge import services
from agents.knowledge.models import Document
from agents.knowledge.serializers import (
    DocumentSerializer,
    DocumentUploadSerializer,
    GatewayRetrieveSerializer,
    KnowledgeBaseCreateSerializer,
    KnowledgeBaseSerializer,
    KnowledgeBaseUpdateSerializer,
    PassageListSerializer,
    SearchRequestSerializer,
    UploadResultSerializer,
)
from portal.api import PROBLEM_CONTENT_TYPE, TenantScopedAPIMixin, created, problem
from portal.drf import JSONParser
from tenants.api import TENANT_SLUG
from tenants.identity.gateway import RETRY_AFTER_S, GatewayView, bearer
from tenants.roles import Action
from tenants.services import Actor

READ = Action.USE_AGENTS
WRITE = Action.MANAGE_KNOWLEDGE


def _role(request) -> str | None:
    return request.membership.role if request.membership is not None else None


def _actor(request) -> Actor:
    if request.membership is None:
        raise exceptions.PermissionDenied("Changing knowledge bases needs a person: use a user token.")
    return Actor.from_request(request)


BEDROCK_FAILED = {
    503: OpenApiResponse(description="Amazon Bedrock could not be reached or throttled: try again (problem JSON)."),
    502: OpenApiResponse(description="Amazon Bedrock refused the portal's set-up (problem JSON)."),
}


def _bedrock_failed(exc) -> Response:
    """A Bedrock knowledge base failing (bedrock.BedrockUnavailable) as a 503 problem when
    waiting may help (Retry-After), else a 502: AWS refused the portal's set-up, which its
    operator must fix — as the memory API answers AgentCore Memory failing."""
    code = 503 if exc.transient else 502
    title = "Knowledge base unavailable" if exc.transient else "Knowledge base refused the portal"
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.transient else {}
    return Response(
        problem(code, title=title, detail=exc.text), status=code, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _entitled(request) -> None:
    if not services.entitled(request.tenant):
        raise exceptions.PermissionDenied(f"Knowledge bases are not part of the {request.tenant.tier.name} plan.")


@extend_schema(parameters=[TENANT_SLUG])
class KnowledgeBaseViewSet(TenantScopedAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = KnowledgeBaseSerializer
    action_permissions = {
        "list": READ,
        "retrieve": READ,
        "search": READ,
        "create": WRITE,
        "partial_update": WRITE,
        "destroy": WRITE,
    }

    def get_queryset(self):
        bases = services.readable_knowledge_bases(role=_role(self.request))
        return bases.annotate(document_count=Count("documents")).order_by("name")

    def get_object(self):
        kb = services.access_knowledge_base(self.kwargs["pk"], role=_role(self.request))
        if kb is None:
            raise exceptions.NotFound()
        return kb

    def retrieve(self, request, *args, **kwargs):
        kb = self.get_object()
        kb.document_count = kb.documents.count()
        return Response(KnowledgeBaseSerializer(kb).data)

    @extend_schema(request=KnowledgeBaseCreateSerializer, responses={201: KnowledgeBaseSerializer})
    def create(self, request, *args, **kwargs):
        _entitled(request)
        serializer = KnowledgeBaseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        kb = services.create_knowledge_base(_actor(request), **serializer.validated_data)
        return created(KnowledgeBaseSerializer(kb).data)

    @extend_schema(request=KnowledgeBaseUpdateSerializer, responses={200: KnowledgeBaseSerializer})
    def partial_update(self, request, *args, **kwargs):
        kb = self.get_object()
        serializer = KnowledgeBaseUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = {"description": kb.description} | serializer.validated_data
        kb = services.update_knowledge_base(_actor(request), kb, **changes)
        return Response(KnowledgeBaseSerializer(kb).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        kb = self.get_object()
        services.delete_knowledge_base(_actor(request), kb)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=SearchRequestSerializer, responses={200: PassageListSerializer, **BEDROCK_FAILED})
    @action(detail=True, methods=["post"])
    def search(self, request, *args, **kwargs):
        """Ranked passages of this knowledge base for a query (the "test search")."""
        kb = self.get_object()
        _entitled(request)
        serializer = SearchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        from agents.knowledge import bedrock, retrieval

        try:
            hits = retrieval.search(
                serializer.validated_data["query"],
                [kb],
                k=serializer.validated_data["k"],
                # The query's embedding (a hybrid base) is billed to the person, none for a machine client.
                meter=retrieval.Meter(user_id=request.user.pk if request.membership is not None else None),
            )
        except bedrock.BedrockUnavailable as exc:  # logged with AWS's code by bedrock.ranking
            return _bedrock_failed(exc)
        return Response({"passages": services.passages_from_hits(request.tenant, hits)})


@extend_schema(parameters=[TENANT_SLUG])
class DocumentViewSet(TenantScopedAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = DocumentSerializer
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, JSONParser]
    action_permissions = {"list": READ, "retrieve": READ, "create": WRITE, "destroy": WRITE}

    def get_queryset(self):
        bases = services.readable_knowledge_bases(role=_role(self.request))
        documents = Document.objects.filter(knowledge_base__in=bases).order_by("knowledge_base_id", "title", "id")
        kb = self.request.query_params.get("knowledge_base")
        if kb is not None:
            if not (kb.isascii() and kb.isdigit() and len(kb) < 19):
                raise exceptions.ValidationError({"knowledge_base": "Give a knowledge base id."})
            documents = documents.filter(knowledge_base_id=int(kb))
        return documents

    def get_object(self):
        document = services.access_document(self.kwargs["pk"], role=_role(self.request))
        if document is None:
            raise exceptions.NotFound()
        return document

    def retrieve(self, request, *args, **kwargs):
        return Response(DocumentSerializer(self.get_object()).data)

    @extend_schema(
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={
            201: UploadResultSerializer,
            200: UploadResultSerializer,
            413: OpenApiResponse(
                description="The body is larger than one file may be (KNOWLEDGE_MAX_UPLOAD_BYTES): refused unread."
            ),
        },
    )
    def create(self, request, *args, **kwargs):
        """Upload one file (multipart `file`, `knowledge_base`); ingestion runs in the background."""
        _entitled(request)
        serializer = DocumentUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        kb = services.access_knowledge_base(serializer.validated_data["knowledge_base"], role=_role(request))
        if kb is None:
            raise exceptions.ValidationError({"knowledge_base": "No such knowledge base."})
        result = services.upload_document(_actor(request), kb, serializer.validated_data["file"])
        body = {"outcome": result.outcome, "document": DocumentSerializer(result.document).data}
        return Response(body, status=status.HTTP_200_OK if result.outcome == "unchanged" else status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        services.delete_document(_actor(request), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class KnowledgeGatewayView(GatewayView):
    """Retrieval for agent runtimes: POST {query, k, agent?, tenant_id?} with the
    act-on-behalf token; answers the token tenant's passages, already screened."""

    @extend_schema(
        request=GatewayRetrieveSerializer,
        responses={200: PassageListSerializer, 401: OpenApiResponse(description="Problem JSON"), **BEDROCK_FAILED},
        operation_id="knowledge_gateway_retrieve",
        tags=["gateway"],
    )
    def post(self, request):
        raw = bearer(request)
        serializer = GatewayRetrieveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        document = services.retrieve_for_token(
            raw,
            query=data["query"],
            k=data["k"],
            agent_slug=data.get("agent", ""),
            tenant_id=data.get("tenant_id"),
        )
        return Response(document)
