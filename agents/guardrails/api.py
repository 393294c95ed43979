"""Guardrails over the REST API: the effective policy and the tenant override, and trigger events."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.guardrails import policy, services
from agents.guardrails.models import Category, GuardrailEvent, Stage
from portal.api import TenantScopedAPIMixin, choice_param
from portal.schema import one_object
from tenants.access import int_or_404
from tenants.api import TENANT_SLUG
from tenants.roles import Action
from tenants.services import Actor, ServiceError

EVENT_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The event's id")


@one_object  # GET .../guardrails/policy/ is the viewset's `list`, but answers with one policy
class GuardrailPolicyViewSerializer(serializers.Serializer):
    effective = serializers.JSONField(help_text="The merged policy every turn runs (tier ← override ← presets).")
    tier_defaults = serializers.JSONField(help_text="The operator's defaults for this tenant's tier.")
    override = serializers.JSONField(help_text="This tenant's own settings.")
    may_override = serializers.BooleanField(help_text="Whether the tier includes custom_guardrails.")


class GuardrailEventSerializer(serializers.ModelSerializer):
    invocation_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = GuardrailEvent
        fields = [
            "id",
            "created_at",
            "stage",
            "category",
            "rule",
            "action",
            "excerpt",
            "score",
            "backend",
            "invocation_id",
            "false_positive",
        ]
        read_only_fields = fields


class FalsePositiveSerializer(serializers.Serializer):
    false_positive = serializers.BooleanField(default=True)


def _policy_body(tenant) -> dict:
    effective = services.effective_policy(tenant)
    return {
        "effective": effective.config,
        "tier_defaults": effective.tier_config,
        "override": effective.override,
        "may_override": effective.may_override,
    }


@extend_schema(parameters=[TENANT_SLUG])
class GuardrailPolicyViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    """GET the effective policy; GET/PUT the tenant's override (PUT replaces it whole)."""

    # Reading and replacing the override are two actions (one URL), so each has its row:
    # a guardrails:read token or a member's role never reaches the PUT.
    action_permissions = {
        "list": Action.VIEW_GUARDRAILS,
        "override": Action.VIEW_GUARDRAILS,
        "replace_override": Action.MANAGE_GUARDRAILS,
    }
    serializer_class = serializers.Serializer

    @extend_schema(responses=GuardrailPolicyViewSerializer)
    def list(self, request, *args, **kwargs):
        return Response(_policy_body(request.tenant))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="override")
    def override(self, request, *args, **kwargs):
        return Response(services.effective_policy(request.tenant).override)

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses=GuardrailPolicyViewSerializer,
        description="Replace the tenant's override. Keys: presets, entities {name: block|redact|allow}, "
        "custom_entities [{name, pattern, action}], denied_topics [{name, description, examples}], "
        "blocked_terms, injection (off|low|medium|high), output_pii, json_schema, block_message, "
        "failure_mode (auto|closed|open), backend (builtin|bedrock; the Bedrock guardrail itself is the "
        "operator's, set in the tier policy — bedrock_guardrail_id and bedrock_guardrail_version are refused).",
    )
    @override.mapping.put
    def replace_override(self, request, *args, **kwargs):
        if not request.body:
            raise exceptions.ValidationError({"non_field_errors": "Send the override as a JSON object ({} clears it)."})
        try:
            services.update_override(Actor.from_request(request), request.data)
        except policy.PolicyError as exc:
            raise exceptions.ValidationError(exc.errors)
        except ServiceError as exc:
            raise exceptions.PermissionDenied(str(exc))
        return Response(_policy_body(request.tenant))


@extend_schema(parameters=[TENANT_SLUG])
@extend_schema_view(retrieve=extend_schema(parameters=[EVENT_ID]), false_positive=extend_schema(parameters=[EVENT_ID]))
class GuardrailEventViewSet(
    TenantScopedAPIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = GuardrailEventSerializer
    action_permissions = {
        "list": Action.VIEW_GUARDRAILS,
        "retrieve": Action.VIEW_GUARDRAILS,
        "false_positive": Action.MANAGE_GUARDRAILS,
    }

    def get_queryset(self):
        events = GuardrailEvent.objects.all()
        stage = choice_param(self.request, "stage", Stage.values)
        category = choice_param(self.request, "category", Category.values)
        if stage is not None:
            events = events.filter(stage=stage)
        if category is not None:
            events = events.filter(category=category)
        return events

    def get_object(self):
        event = GuardrailEvent.objects.filter(pk=int_or_404(self.kwargs["pk"])).first()
        if event is None:
            raise exceptions.NotFound()
        return event

    @extend_schema(
        parameters=[
            OpenApiParameter("stage", str, enum=Stage.values, required=False),
            OpenApiParameter("category", str, enum=Category.values, required=False),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=FalsePositiveSerializer, responses=GuardrailEventSerializer)
    @action(detail=True, methods=["post"], url_path="false-positive")
    def false_positive(self, request, *args, **kwargs):
        event = self.get_object()
        payload = FalsePositiveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.mark_false_positive(Actor.from_request(request), event, payload.validated_data["false_positive"])
        except ServiceError as exc:
            raise exceptions.NotFound(str(exc))
        return Response(GuardrailEventSerializer(event).data)
