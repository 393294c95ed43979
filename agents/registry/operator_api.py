"""The shared agent catalogue over the REST API, for operators: /api/v1/operator/registry/.

The same service functions as the console's /operator/agents/ screens (agents.registry.
services), so the same rules: four eyes (the approver is never the version's author),
conditional state changes (two approvals at once publish once; the second is a 409),
every transition audited with before and after.

* `agents/`: GET every shared agent (any status) with its reviews waiting; POST a new
  shared agent, a draft, with its version 1 (a draft).
* `agents/{id}/`: GET one shared agent. `agents/{id}/versions/`: GET its versions, POST a
  new draft version.
* `versions/`: GET shared agents' versions (`?state=submitted`: what waits for a review).
  `versions/{id}/`: GET one; POST `submit/`, `approve/`, `reject/` (a reason),
  `roll-back/` (a copy of an earlier published version, submitted as a new version).

Staff only (portal.operator.api): a browser session, or an operator token with
`operator:catalogue:read` to read and `operator:catalogue:write` to write (else 403); a
tenant's bearer token, or anyone not staff, gets 404. Every error is problem JSON: 400 bad
input, 403 the four-eyes rule (a token acts as its owner) or a missing scope, 404 no such
shared agent or version (a tenant's own are not the operators'), 409 a state that another
request changed.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from agents.models import Agent
from agents.registry import services
from agents.registry.api import RejectSerializer, VersionSerializer
from agents.registry.models import AgentVersion, VersionState
from portal.api import choice_param
from portal.operator.api import OperatorAPIMixin
from portal.schema import counted_list
from tenants.audit import client_ip
from tenants.services import Actor

REASON = "operator API: agent registry"

PROBLEMS = {
    400: OpenApiResponse(description="Problem JSON: bad input (unknown model or tier, empty name or instructions)"),
    403: OpenApiResponse(description="Problem JSON: the four-eyes rule (the author of a version cannot approve it)"),
    404: OpenApiResponse(description="Problem JSON: no such shared agent or version, or the caller is not an operator"),
    409: OpenApiResponse(description="Problem JSON: the version's state changed (already reviewed, not a draft)"),
}
AGENT_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The shared agent's id.")
VERSION_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The version's id.")


class SharedAgentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(
        slug_field="key", read_only=True, allow_null=True, help_text="None: each tier's default model."
    )
    offered_to_tiers = serializers.ListField(child=serializers.CharField(), read_only=True)
    live_version = serializers.IntegerField(source="published_version", read_only=True, allow_null=True)
    pending_reviews = serializers.SerializerMethodField(help_text="Versions waiting for a review.")

    class Meta:
        model = Agent
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "status",
            "model",
            "offered_to_tiers",
            "live_version",
            "pending_reviews",
        ]
        read_only_fields = fields

    def get_pending_reviews(self, agent) -> int:
        return self.context.get("pending", {}).get(agent.pk, 0)


class SharedVersionSerializer(VersionSerializer):
    model = serializers.SlugRelatedField(
        slug_field="key", read_only=True, allow_null=True, help_text="None: each tier's default model."
    )
    offered_to_tiers = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "offered_to_tiers"]
        read_only_fields = fields


class SharedVersionInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=services.NAME_MAX, allow_blank=True)
    description = serializers.CharField(max_length=services.DESCRIPTION_MAX, allow_blank=True, required=False)
    instructions = serializers.CharField(max_length=services.INSTRUCTIONS_MAX, allow_blank=True, trim_whitespace=False)
    model = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        help_text="A shared model offering's key; empty or absent: each tier's default model.",
    )
    offered_to_tiers = serializers.ListField(
        child=serializers.CharField(max_length=60),
        required=False,
        max_length=100,
        help_text="Slugs of the tiers whose tenants may enable the agent.",
    )
    change_note = serializers.CharField(max_length=services.NOTE_MAX, allow_blank=True, required=False)

    def draft(self) -> services.Draft:
        data = self.validated_data
        return services.Draft(
            name=data["name"],
            description=data.get("description", ""),
            instructions=data["instructions"],
            model_key=data.get("model", ""),
            offered_to_tiers=tuple(data.get("offered_to_tiers", ())),
            change_note=data.get("change_note", ""),
        )


class SharedAgentInputSerializer(SharedVersionInputSerializer):
    slug = serializers.SlugField(
        max_length=services.SLUG_MAX, required=False, allow_blank=True, help_text="Default: from the name."
    )


def _actor(request) -> Actor:
    """The operator, from where: shared agents are no tenant's, so no membership."""
    return Actor(user=request.user, ip=client_ip(request))


def _id(raw) -> int | None:
    raw = str(raw or "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _version_data(version: AgentVersion) -> dict:
    return SharedVersionSerializer(version).data


@extend_schema(tags=["operator"])
class OperatorRegistryAgentViewSet(OperatorAPIMixin, viewsets.GenericViewSet):
    serializer_class = SharedAgentSerializer
    operator_reason = REASON

    def _agent(self) -> Agent:
        agent = services.access_shared_agent(_id(self.kwargs.get("pk")))
        if agent is None:
            raise NotFound()
        return agent

    @extend_schema(
        responses=counted_list("SharedAgentList", SharedAgentSerializer), operation_id="operator_registry_agents_list"
    )
    def list(self, request, *args, **kwargs):
        agents = list(services.shared_agents().order_by("name"))
        pending = services.pending_reviews(agents)
        rows = SharedAgentSerializer(agents, many=True, context={"pending": pending}).data
        return Response({"count": len(rows), "results": rows})

    @extend_schema(
        request=SharedAgentInputSerializer,
        responses={201: SharedVersionSerializer, **PROBLEMS},
        description="A new shared agent, as a draft (no tenant sees it), with its version 1 (a draft).",
        operation_id="operator_registry_agent_create",
    )
    def create(self, request, *args, **kwargs):
        payload = SharedAgentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        actor = _actor(request)
        _agent, version = services.create_agent(
            request.user, payload.draft(), slug=payload.validated_data.get("slug", ""), actor=actor
        )
        return Response(_version_data(version), status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[AGENT_ID],
        responses={200: SharedAgentSerializer, 404: PROBLEMS[404]},
        operation_id="operator_registry_agent_retrieve",
    )
    def retrieve(self, request, *args, **kwargs):
        agent = self._agent()
        pending = services.pending_reviews([agent])
        return Response(SharedAgentSerializer(agent, context={"pending": pending}).data)

    @extend_schema(parameters=[AGENT_ID])
    @extend_schema(
        methods=["GET"],
        responses={200: counted_list("SharedVersionList", SharedVersionSerializer), 404: PROBLEMS[404]},
        operation_id="operator_registry_versions_of_agent",
    )
    @extend_schema(
        methods=["POST"],
        request=SharedVersionInputSerializer,
        responses={201: SharedVersionSerializer, **PROBLEMS},
        description="A new draft version of the shared agent (nothing changes for tenants until it is approved).",
        operation_id="operator_registry_version_create",
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request, *args, **kwargs):
        agent = self._agent()
        if request.method == "GET":
            versions = list(services.versions_of(agent))
            for version in versions:
                version.agent = agent
            return Response({"count": len(versions), "results": [_version_data(v) for v in versions]})
        payload = SharedVersionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        version = services.create_version(request.user, agent, payload.draft(), actor=_actor(request))
        version.agent = agent
        return Response(_version_data(version), status=status.HTTP_201_CREATED)


@extend_schema(tags=["operator"])
class OperatorRegistryVersionViewSet(OperatorAPIMixin, viewsets.GenericViewSet):
    serializer_class = SharedVersionSerializer
    operator_reason = REASON

    def get_object(self) -> AgentVersion:
        version = services.access_shared_version(_id(self.kwargs.get("pk")))
        if version is None:
            raise NotFound()
        return version

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=VersionState.values, description="Only versions in this state.")
        ],
        responses=counted_list("SharedVersionReviewList", SharedVersionSerializer),
        operation_id="operator_registry_versions_list",
        description="Versions of shared agents, newest first (at most 500); `state=submitted`: the review queue.",
    )
    def list(self, request, *args, **kwargs):
        state = choice_param(request, "state", VersionState.values)
        versions = AgentVersion.unscoped.filter(owner_tenant__isnull=True, agent__owner_tenant__isnull=True)
        if state is not None:
            versions = versions.filter(state=state)
        versions = list(versions.select_related("agent", "model").order_by("-created_at", "-pk")[:500])
        return Response({"count": len(versions), "results": [_version_data(v) for v in versions]})

    @extend_schema(parameters=[VERSION_ID], responses={200: SharedVersionSerializer, 404: PROBLEMS[404]})
    def retrieve(self, request, *args, **kwargs):
        return Response(_version_data(self.get_object()))

    @extend_schema(
        parameters=[VERSION_ID],
        request=None,
        responses={200: SharedVersionSerializer, **PROBLEMS},
        description="Ask for a review of a draft.",
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, *args, **kwargs):
        version = services.submit(request.user, self.get_object(), actor=_actor(request))
        return Response(_version_data(version))

    @extend_schema(
        parameters=[VERSION_ID],
        request=None,
        responses={200: SharedVersionSerializer, **PROBLEMS},
        description=(
            "Publish a submitted version (never by its author: 403): tenants' next turns use it. "
            "A version already reviewed (e.g. by another operator at the same moment) is a 409."
        ),
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, *args, **kwargs):
        version = services.approve(request.user, self.get_object(), actor=_actor(request))
        return Response(_version_data(version))

    @extend_schema(
        parameters=[VERSION_ID], request=RejectSerializer, responses={200: SharedVersionSerializer, **PROBLEMS}
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, *args, **kwargs):
        version = self.get_object()
        payload = RejectSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        version = services.reject(request.user, version, payload.validated_data["reason"], actor=_actor(request))
        return Response(_version_data(version))

    @extend_schema(
        parameters=[VERSION_ID],
        request=None,
        responses={201: SharedVersionSerializer, **PROBLEMS},
        description="Submit a copy of this earlier published version as a new version (it needs a review).",
    )
    @action(detail=True, methods=["post"], url_path="roll-back")
    def roll_back(self, request, *args, **kwargs):
        copy = services.roll_back(request.user, self.get_object(), actor=_actor(request))
        return Response(_version_data(copy), status=status.HTTP_201_CREATED)
