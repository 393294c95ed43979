"""Who may write which skill, which skills an agent may be given, and the audit trail."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from agents.skills import services
from agents.skills.models import AgentSkill, Skill, SkillStatus
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog
from tenants.services import Actor, ServiceError
from tests.agents.helpers import make_catalogue
from tests.skills.helpers import attach, own_skill, shared_skill


def actor(side, role: str) -> Actor:
    return Actor(user=side.user(role), membership=side.memberships[role])


@pytest.fixture
def catalogue(world):
    return make_catalogue(world.a.tenant, world.b.tenant)


def test_it_never_shows_a_tenant_another_tenants_skill(world):
    mine = own_skill(world.a)
    theirs = own_skill(world.b)
    with tenant_context(world.a.tenant):
        assert list(Skill.objects.values_list("pk", flat=True)) == [mine.pk]
        assert theirs.pk not in services.usable_skills(world.a.tenant)
        assert Skill.objects.filter(pk=theirs.pk).first() is None


def test_it_refuses_to_attach_another_tenants_skill(world, catalogue):
    theirs = own_skill(world.b)
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="not one of this organisation"):
        services.set_agent_skills(actor(world.a, "admin"), catalogue.helpdesk, [theirs.pk])
    with tenant_context(world.a.tenant):
        assert not AgentSkill.objects.exists()


def test_it_refuses_a_shared_skill_the_tier_is_not_offered(world, catalogue):
    from tests.factories import make_tier

    premium_only = shared_skill(make_tier("premium-only"))
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="not one of this organisation"):
        services.set_agent_skills(actor(world.a, "admin"), catalogue.helpdesk, [premium_only.pk])


def test_it_refuses_a_draft_shared_skill(world, catalogue):
    draft = shared_skill(world.a.tenant.tier, status=SkillStatus.DRAFT)
    with tenant_context(world.a.tenant), pytest.raises(ServiceError):
        services.set_agent_skills(actor(world.a, "admin"), catalogue.helpdesk, [draft.pk])


def test_it_lets_an_admin_choose_tier_and_own_skills_and_audits_it(world, catalogue):
    shared = shared_skill(world.a.tenant.tier)
    mine = own_skill(world.a, extends=shared)
    with tenant_context(world.a.tenant):
        chosen = services.set_agent_skills(actor(world.a, "admin"), catalogue.helpdesk, [shared.pk, mine.pk])
        assert {s.pk for s in chosen} == {shared.pk, mine.pk}
        entry = AuditLog.objects.filter(action="skills.agent_skills_changed").get()
    assert entry.before == {"skills": []}
    assert entry.after == {"skills": ["own-refund", "refund"]}
    assert entry.actor_id == world.a.admin.pk


def test_a_member_may_not_choose_skills(world, catalogue):
    shared = shared_skill(world.a.tenant.tier)
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.set_agent_skills(actor(world.a, "member"), catalogue.helpdesk, [shared.pk])


def test_an_admin_saves_an_own_skill_audited_with_before_and_after(world):
    with tenant_context(world.a.tenant):
        skill = Skill(owner_tenant=world.a.tenant, key="greet", name="Greet", description="Always", instructions="Hi")
        services.save_skill(actor(world.a, "admin"), skill)
        skill.instructions = "Hello"
        services.save_skill(actor(world.a, "admin"), skill)
        entries = list(AuditLog.objects.filter(action__startswith="skills.skill_").order_by("pk"))
    assert [e.action for e in entries] == ["skills.skill_created", "skills.skill_updated"]
    assert entries[1].before["instructions"] == "Hi" and entries[1].after["instructions"] == "Hello"


def test_a_tenant_skill_may_extend_only_a_shared_skill_of_its_tier(world):
    from tests.factories import make_tier

    elsewhere = shared_skill(make_tier("premium-only"), key="elsewhere")
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="does not offer"):
        skill = Skill(owner_tenant=world.a.tenant, key="x", name="X", description="d", instructions="i")
        skill.extends = elsewhere
        services.save_skill(actor(world.a, "admin"), skill)


def test_only_operators_save_shared_skills(world, operator):
    skill = Skill(key="shared", name="Shared", description="d", instructions="steps", tiers=[world.a.tenant.tier.slug])
    with pytest.raises(ServiceError, match="Only operators"):
        services.save_skill(Actor(user=world.a.owner), skill)
    services.save_skill(Actor(user=operator), skill)
    with all_tenants("test: read the audit log"):
        assert AuditLog.unscoped.filter(action="skills.skill_created", actor=operator).exists()


def test_it_refuses_instructions_over_the_cap(world):
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="longer than"):
        skill = Skill(owner_tenant=world.a.tenant, key="big", name="Big", description="d", instructions="x" * 9000)
        services.save_skill(actor(world.a, "admin"), skill)


def test_the_turn_gets_the_bridged_composition(world, catalogue):
    shared = shared_skill(world.a.tenant.tier)
    mine = own_skill(world.a, extends=shared, steps="Ask finance to approve.")
    attach(world.a, catalogue.helpdesk, mine)
    with tenant_context(world.a.tenant):
        skills = services.skills_for_turn(world.a.tenant, catalogue.helpdesk)
    assert skills == [
        {
            "name": "Alpha Inc refunds",
            "description": "A refund above 100 EUR.",
            "instructions": (
                "1. Confirm who is asking.\n2. Log the request.\n\n### Alpha Inc's steps\n\nAsk finance to approve."
            ),
        }
    ]
    with tenant_context(world.b.tenant):
        assert services.skills_for_turn(world.b.tenant, catalogue.helpdesk) == []
