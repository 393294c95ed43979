"""Skills test data: a shared refund skill and a tenant's own skill bridged onto it."""

from __future__ import annotations

from agents.skills.models import AgentSkill, Skill, SkillStatus
from tenants.context import all_tenants, tenant_context

SHARED_STEPS = "1. Confirm who is asking.\n2. Log the request."


def shared_skill(*tiers, key: str = "refund", status: str = SkillStatus.ACTIVE) -> Skill:
    with all_tenants("test: a shared skill"):
        return Skill.unscoped.create(
            key=key,
            name="Handle a refund request",
            description="The customer asks for money back.",
            instructions=SHARED_STEPS,
            status=status,
            tiers=[tier.slug for tier in tiers],
        )


def own_skill(side, *, key: str = "own-refund", extends: Skill | None = None, steps: str = "Ask finance.") -> Skill:
    with tenant_context(side.tenant):
        return Skill.objects.create(
            owner_tenant=side.tenant,
            key=key,
            name=f"{side.tenant.name} refunds",
            description="A refund above 100 EUR.",
            instructions=steps,
            status=SkillStatus.ACTIVE,
            extends=extends,
        )


def attach(side, agent, *skills: Skill) -> None:
    with tenant_context(side.tenant):
        for skill in skills:
            AgentSkill.objects.create(agent=agent, skill=skill)
