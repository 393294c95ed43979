"""The agent registry over the REST API, under /api/v1/tenants/<slug>/registry/.

* `agents/`: GET the catalogue members may chat with (agents.use); POST a new agent of
  the tenant's own with its version 1 as a draft (agents.manage).
* `agents/{id}/versions/`: GET the versions of one of the tenant's own agents, POST a
  new draft version (agents.manage).
* `versions/{id}/` GET, and `submit/`, `approve/`, `reject/` (a reason), `roll-back/`
  POSTs (agents.manage). Four eyes: the author of a version gets 403 approving it.

Shared agents are the operators' (operator console, and /api/v1/operator/registry/ in
agents/registry/operator_api.py). Every error is problem JSON; a version whose state another
request changed (two reviewers at once, a draft already submitted) is a 409.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from agents import services as agent_services
from agents.registry import services
from agents.registry.models import AgentVersion
from portal.api import TenantScopedAPIMixin
from tenants.api import TENANT_SLUG
from tenants.roles import Action
from tenants.services import Actor, ServiceError

PROBLEMS = {
    400: OpenApiResponse(description="Problem JSON: bad input (unknown model, model outside the plan, empty text)"),
    403: OpenApiResponse(description="Problem JSON: the role, token scope or four-eyes rule refuses it"),
    404: OpenApiResponse(description="Problem JSON: no such agent or version in this tenant"),
    409: OpenApiResponse(description="Problem JSON: the version's state changed (already reviewed, not a draft)"),
}


class CatalogueAgentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    model = serializers.CharField(allow_null=True, help_text="The model a turn uses here (the tier's routing).")
    live_version = serializers.IntegerField(allow_null=True, source="published_version")
    own = serializers.BooleanField(help_text="The tenant's own agent (else shared by the provider).")


class VersionSerializer(serializers.ModelSerializer):
    agent = serializers.IntegerField(source="agent_id", read_only=True)
    model = serializers.SlugRelatedField(slug_field="key", read_only=True)
    author = serializers.CharField(source="author_email", read_only=True)
    reviewed_by = serializers.CharField(source="reviewed_by_email", read_only=True)
    live = serializers.SerializerMethodField()

    class Meta:
        model = AgentVersion
        fields = [
            "id",
            "agent",
            "number",
            "state",
            "live",
            "name",
            "description",
            "instructions",
            "model",
            "change_note",
            "author",
            "created_at",
            "submitted_at",
            "reviewed_by",
            "reviewed_at",
            "review_note",
            "rolled_back_from",
        ]
        read_only_fields = fields

    def get_live(self, version) -> bool:
        return version.agent.published_version == version.number


class VersionInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=services.NAME_MAX, allow_blank=True)
    description = serializers.CharField(max_length=services.DESCRIPTION_MAX, allow_blank=True, required=False)
    instructions = serializers.CharField(max_length=services.INSTRUCTIONS_MAX, allow_blank=True, trim_whitespace=False)
    model = serializers.CharField(max_length=300, help_text="A model offering's key the tenant's plan includes.")
    change_note = serializers.CharField(max_length=services.NOTE_MAX, allow_blank=True, required=False)

    def draft(self) -> services.Draft:
        data = self.validated_data
        return services.Draft(
            name=data["name"],
            description=data.get("description", ""),
            instructions=data["instructions"],
            model_key=data["model"],
            change_note=data.get("change_note", ""),
        )


class AgentInputSerializer(VersionInputSerializer):
    slug = serializers.SlugField(max_length=services.SLUG_MAX, required=False, allow_blank=True)


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=services.NOTE_MAX, allow_blank=True)


def _catalogue_row(agent, tenant) -> dict:
    try:
        model = agent_services.route_model(agent, tenant).offering.key
    except ServiceError:
        model = None
    return {
        "id": agent.pk,
        "slug": agent.slug,
        "name": agent.name,
        "description": agent.description,
        "model": model,
        "published_version": agent.published_version,
        "own": agent.owner_tenant_id is not None,
    }


MANAGE = Action.MANAGE_AGENTS


@extend_schema(parameters=[TENANT_SLUG], tags=["registry"])
class RegistryAgentViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = CatalogueAgentSerializer
    action_permissions = {"list": Action.USE_AGENTS, "create": MANAGE, "versions": MANAGE}

    @extend_schema(responses={200: CatalogueAgentSerializer(many=True)}, operation_id="registry_catalogue")
    def list(self, request, *args, **kwargs):
        agents = services.search_catalogue(agent_services.agents_for_members(request.tenant), request.GET.get("q", ""))
        rows = [_catalogue_row(agent, request.tenant) for agent in agents]
        return Response({"count": len(rows), "results": CatalogueAgentSerializer(rows, many=True).data})

    @extend_schema(
        request=AgentInputSerializer,
        responses={201: VersionSerializer, **PROBLEMS},
        description="A new agent of the tenant's own, as a draft, with its version 1 (a draft).",
        operation_id="registry_agent_create",
    )
    def create(self, request, *args, **kwargs):
        payload = AgentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        _agent, version = services.create_agent(
            request.user,
            payload.draft(),
            slug=payload.validated_data.get("slug", ""),
            actor=Actor.from_request(request),
            tenant=request.tenant,
        )
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="The agent's id.")])
    @extend_schema(
        methods=["GET"],
        responses={200: VersionSerializer(many=True), 404: PROBLEMS[404]},
        operation_id="registry_versions_list",
    )
    @extend_schema(
        methods=["POST"],
        request=VersionInputSerializer,
        responses={201: VersionSerializer, **PROBLEMS},
        operation_id="registry_version_create",
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request, *args, **kwargs):
        raw = str(kwargs.get("pk", ""))
        agent = (
            services.access_own_agent(request.tenant, int(raw))
            if raw.isascii() and raw.isdigit() and len(raw) < 19
            else None
        )
        if agent is None:
            raise NotFound()
        if request.method == "GET":
            versions = list(services.versions_of(agent))
            for version in versions:
                version.agent = agent
            return Response({"count": len(versions), "results": VersionSerializer(versions, many=True).data})
        payload = VersionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        version = services.create_version(request.user, agent, payload.draft(), actor=Actor.from_request(request))
        version.agent = agent
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[TENANT_SLUG], tags=["registry"])
class RegistryVersionViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = VersionSerializer
    action_permissions = {
        "retrieve": MANAGE,
        "submit": MANAGE,
        "approve": MANAGE,
        "reject": MANAGE,
        "roll_back": MANAGE,
    }

    def get_object(self):
        raw = str(self.kwargs.get("pk", ""))
        version = None
        if raw.isascii() and raw.isdigit() and len(raw) < 19:
            version = services.access_tenant_version(self.request.tenant, int(raw))
        if version is None:
            raise NotFound()
        return version

    def retrieve(self, request, *args, **kwargs):
        return Response(VersionSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={200: VersionSerializer, **PROBLEMS}, description="Ask for a review.")
    @action(detail=True, methods=["post"])
    def submit(self, request, *args, **kwargs):
        version = services.submit(request.user, self.get_object(), actor=Actor.from_request(request))
        return Response(VersionSerializer(version).data)

    @extend_schema(
        request=None,
        responses={200: VersionSerializer, **PROBLEMS},
        description="Publish a submitted version (not by its author): the agent's next turns use it.",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, *args, **kwargs):
        version = services.approve(request.user, self.get_object(), actor=Actor.from_request(request))
        return Response(VersionSerializer(version).data)

    @extend_schema(request=RejectSerializer, responses={200: VersionSerializer, **PROBLEMS})
    @action(detail=True, methods=["post"])
    def reject(self, request, *args, **kwargs):
        version = self.get_object()
        payload = RejectSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        version = services.reject(
            request.user, version, payload.validated_data["reason"], actor=Actor.from_request(request)
        )
        return Response(VersionSerializer(version).data)

    @extend_schema(
        request=None,
        responses={201: VersionSerializer, **PROBLEMS},
        description="Submit a copy of this earlier published version as a new version.",
    )
    @action(detail=True, methods=["post"], url_path="roll-back")
    def roll_back(self, request, *args, **kwargs):
        copy = services.roll_back(request.user, self.get_object(), actor=Actor.from_request(request))
        return Response(VersionSerializer(copy).data, status=status.HTTP_201_CREATED)
