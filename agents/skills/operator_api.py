"""Shared skills over the REST API, for operators: /api/v1/operator/skills/.

The same service function as the console's /operator/skills/ screens
(agents.skills.services.save_skill): validated, audited with before and after, and every
tenant's cached skills moved on at once.

* GET the shared skills (every status); POST a new one (`tiers`: the tier slugs offered
  it; `status` draft by default).
* GET `{id}/`; PATCH `{id}/` changes any of its fields: `{"status": "retired"}` retires it
  (it stops reaching agents at once, bridged tenant skills too), `{"tiers": [...]}` offers
  it to exactly those tiers.

Staff only (portal.operator.api): a browser session, or an operator token with
`operator:catalogue:read` to read and `operator:catalogue:write` to write (else 403); a
tenant's bearer token, or anyone not staff, gets 404. Errors are problem JSON: 400 bad
input (unknown tier, a key another shared skill has), 404 no such shared skill (a tenant's
own skills are not the operators').
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from agents.skills import services
from agents.skills.models import MAX_INSTRUCTIONS_CHARS, Skill, SkillStatus
from portal.api import created
from portal.operator.api import OperatorAPIMixin
from portal.schema import counted_list
from tenants.audit import client_ip
from tenants.services import Actor

SKILL_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The shared skill's id.")
PROBLEMS = {
    400: OpenApiResponse(description="Problem JSON: bad input (key, unknown tier, a key another shared skill has)"),
    404: OpenApiResponse(description="Problem JSON: no such shared skill, or the caller is not an operator"),
}


class SharedSkillSerializer(serializers.ModelSerializer):
    tiers = serializers.ListField(child=serializers.CharField(), help_text="Tier slugs offered the skill.")

    class Meta:
        model = Skill
        fields = ["id", "key", "name", "description", "instructions", "status", "tiers", "created_at", "updated_at"]
        read_only_fields = fields


class SharedSkillWriteSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500)
    instructions = serializers.CharField(max_length=MAX_INSTRUCTIONS_CHARS)
    status = serializers.ChoiceField(choices=SkillStatus.choices, default=SkillStatus.DRAFT)
    tiers = serializers.ListField(
        child=serializers.CharField(max_length=60),
        max_length=100,
        default=list,
        help_text="Slugs of the tiers offered the skill (replaces the previous list).",
    )

    def validate_tiers(self, value):
        return sorted(set(value))


def _actor(request) -> Actor:
    return Actor(user=request.user, ip=client_ip(request))


@extend_schema(tags=["operator"])
class OperatorSkillViewSet(OperatorAPIMixin, viewsets.GenericViewSet):
    serializer_class = SharedSkillSerializer
    operator_reason = "operator API: shared skills"

    def _skill(self) -> Skill:
        raw = str(self.kwargs.get("pk", ""))
        skill = None
        if raw.isascii() and raw.isdigit() and len(raw) < 19:
            skill = Skill.unscoped.filter(owner_tenant__isnull=True, pk=int(raw)).first()
        if skill is None:
            raise NotFound()
        return skill

    @extend_schema(responses=counted_list("SharedSkillList", SharedSkillSerializer))
    def list(self, request, *args, **kwargs):
        skills = list(Skill.unscoped.filter(owner_tenant__isnull=True).order_by("name", "pk"))
        return Response({"count": len(skills), "results": SharedSkillSerializer(skills, many=True).data})

    @extend_schema(request=SharedSkillWriteSerializer, responses={201: SharedSkillSerializer, **PROBLEMS})
    def create(self, request, *args, **kwargs):
        payload = SharedSkillWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        skill = services.save_skill(_actor(request), Skill(owner_tenant=None, **payload.validated_data))
        return created(SharedSkillSerializer(skill).data)

    @extend_schema(parameters=[SKILL_ID], responses={200: SharedSkillSerializer, 404: PROBLEMS[404]})
    def retrieve(self, request, *args, **kwargs):
        return Response(SharedSkillSerializer(self._skill()).data)

    @extend_schema(
        parameters=[SKILL_ID],
        request=SharedSkillWriteSerializer,
        responses={200: SharedSkillSerializer, **PROBLEMS},
        description="Change the fields sent: `status` retired retires it, `tiers` offers it to exactly those tiers.",
    )
    def partial_update(self, request, *args, **kwargs):
        skill = self._skill()
        payload = SharedSkillWriteSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        for name, value in payload.validated_data.items():
            setattr(skill, name, value)
        skill = services.save_skill(_actor(request), skill)
        return Response(SharedSkillSerializer(skill).data)
