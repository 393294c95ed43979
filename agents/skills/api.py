"""Skills over the REST API, under /api/v1/tenants/<slug>/.

* `skills/`: list the skills the tenant sees (its plan's shared skills and its own),
  create one of its own, change one of its own (PATCH); writes need MANAGE_AGENTS.
* `agent-skills/`: each agent's skills; PUT `agent-skills/<agent id>/` replaces one
  agent's choice. Bad input is problem JSON (portal.api), never a 500.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, viewsets
from rest_framework.response import Response

from agents.skills import services
from agents.skills.models import AgentSkill, Skill
from agents.skills.serializers import AgentSkillsSerializer, SkillSerializer, SkillWriteSerializer
from portal.api import TenantScopedAPIMixin, created
from tenants.access import int_or_404
from tenants.api import TENANT_SLUG
from tenants.roles import Action
from tenants.services import Actor, ServiceError

SKILL_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The id of one of the tenant's own skills")
AGENT_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The agent's id")


def _actor(request) -> Actor:
    return Actor.from_request(request)


def _extends(tenant, skill_id):
    if skill_id is None:
        return None
    skill = Skill.objects.filter(pk=skill_id, owner_tenant__isnull=True).first()
    if skill is None:
        raise ServiceError(f"The {tenant.tier.name} plan does not offer the skill it extends.")
    return skill


@extend_schema(parameters=[TENANT_SLUG])
class SkillViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = SkillSerializer
    action_permissions = {
        "list": Action.USE_AGENTS,
        "create": Action.MANAGE_AGENTS,
        "partial_update": Action.MANAGE_AGENTS,
    }

    def list(self, request, *args, **kwargs):
        tenant = request.tenant
        skills = services.tier_shared_skills(tenant) + services.own_skills(tenant)
        return Response({"count": len(skills), "results": SkillSerializer(skills, many=True).data})

    @extend_schema(request=SkillWriteSerializer, responses={201: SkillSerializer})
    def create(self, request, *args, **kwargs):
        serializer = SkillWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        extends = _extends(request.tenant, data.pop("extends", None))
        skill = services.save_skill(_actor(request), Skill(owner_tenant=request.tenant, extends=extends, **data))
        return created(SkillSerializer(skill).data)

    @extend_schema(request=SkillWriteSerializer, responses={200: SkillSerializer}, parameters=[SKILL_ID])
    def partial_update(self, request, *args, **kwargs):
        skill = Skill.objects.filter(pk=int_or_404(kwargs["pk"]), owner_tenant=request.tenant).first()
        if skill is None:
            raise exceptions.NotFound()
        serializer = SkillWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "extends" in data:
            skill.extends = _extends(request.tenant, data.pop("extends"))
        for name, value in data.items():
            setattr(skill, name, value)
        skill = services.save_skill(_actor(request), skill)
        return Response(SkillSerializer(skill).data)


@extend_schema(parameters=[TENANT_SLUG])
class AgentSkillViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    serializer_class = AgentSkillsSerializer
    action_permissions = {"list": Action.USE_AGENTS, "update": Action.MANAGE_AGENTS}

    def _agents(self):
        from agents import services as agent_services

        return agent_services.agents_for_members(self.request.tenant)

    def list(self, request, *args, **kwargs):
        chosen: dict[int, list[int]] = {}
        for agent_id, skill_id in AgentSkill.objects.order_by("skill_id").values_list("agent_id", "skill_id"):
            chosen.setdefault(agent_id, []).append(skill_id)
        rows = [{"agent": agent.pk, "skills": chosen.get(agent.pk, [])} for agent in self._agents()]
        return Response({"count": len(rows), "results": rows})

    @extend_schema(request=AgentSkillsSerializer, responses={200: AgentSkillsSerializer}, parameters=[AGENT_ID])
    def update(self, request, *args, **kwargs):
        agent_pk = int_or_404(kwargs["pk"])
        agent = next((a for a in self._agents() if a.pk == agent_pk), None)
        if agent is None:
            raise exceptions.NotFound()
        serializer = AgentSkillsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        skills = services.set_agent_skills(_actor(request), agent, serializer.validated_data["skills"])
        return Response({"agent": agent.pk, "skills": sorted(skill.pk for skill in skills)})
