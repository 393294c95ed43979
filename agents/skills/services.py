"""Skills: the operator's shared skills, a tenant's own, which ones each agent uses, and
what a turn hands the runtime.

* `save_skill`: operators create or change shared skills (offered to tiers); tenant
  admins (MANAGE_AGENTS) their tenant's own, which may extend a shared skill their tier
  is offered (the bridge pattern). Audited with before and after.
* `set_agent_skills`: a tenant admin's choice of skills for an agent: active shared
  skills of the tenant's tier and the tenant's own active skills. Audited.
* `skills_for_turn`: [{name, description, instructions}] for the runtime request, with
  a bridged skill composed as the shared steps, then "<tenant>'s steps".

Cost per chat turn: one cache read (`get_many` of the skills generation and the tenant's
cached map agent → skills), made by agents.turns in the Redis round trip that publishes the
turn's "running" status when the cache is the relay's Redis (turn_cache_keys), so no trip
of its own. A miss costs one query, then is cached; an agent without skills costs nothing
more than the cache get. Every change invalidates: a
tenant's own skill or choice drops that tenant's entry, a shared skill moves the
generation (every tenant's entry is stale), and the entry remembers the tier and the
tenant name it was built for, so a tenant moved to another tier or renamed is rebuilt at once.
"""

from __future__ import annotations

import re

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q

from agents.skills.models import MAX_INSTRUCTIONS_CHARS, AgentSkill, Skill, SkillStatus
from portal.cache import next_generation, optional_cache
from tenants import audit
from tenants.context import require_tenant, tenant_context
from tenants.models import Tenant
from tenants.roles import Action, require
from tenants.services import Actor, ServiceError

SKILLS_TTL = 300  # seconds; every change invalidates at once, the TTL bounds a missed one
_GEN_KEY = "skills:gen"


def _tenant_key(tenant_id: int) -> str:
    return f"skills:tenant:{tenant_id}"


def _tenant_gen_key(tenant_id: int) -> str:
    return f"skills:tenant-gen:{tenant_id}"


def invalidate_tenant(tenant_id: int) -> None:
    # A generation, not a delete: a turn that read the rows before this change committed
    # would put its old entry back after a delete, and every turn would follow the old steps
    # until SKILLS_TTL; under the tenant's new generation that entry is never taken.
    next_generation(_tenant_gen_key(tenant_id))


def invalidate_all() -> None:
    next_generation(_GEN_KEY)


# --- what a tenant may use ------------------------------------------------------------------


def tier_shared_skills(tenant: Tenant):
    """Active shared skills offered to the tenant's tier (what its admins may choose or extend)."""
    return [
        skill
        for skill in Skill.objects.filter(owner_tenant__isnull=True, status=SkillStatus.ACTIVE).order_by("name")
        if tenant.tier.slug in (skill.tiers or [])
    ]


def own_skills(tenant: Tenant):
    """The tenant's own skills, every status (the tenant's skills page lists them)."""
    return list(Skill.objects.filter(owner_tenant=tenant).select_related("extends").order_by("name"))


def usable_skills(tenant: Tenant) -> dict[int, Skill]:
    """What an agent of the tenant may be given: tier-offered shared and own active skills."""
    usable = {skill.pk: skill for skill in tier_shared_skills(tenant)}
    usable.update({skill.pk: skill for skill in own_skills(tenant) if skill.active})
    return usable


def _skill_view(skill: Skill) -> dict:
    return {
        "key": skill.key,
        "name": skill.name,
        "description": skill.description,
        "instructions": skill.instructions,
        "status": skill.status,
        "tiers": sorted(skill.tiers or []),
        "extends": skill.extends.key if skill.extends_id else None,
    }


def save_skill(actor: Actor, skill: Skill) -> Skill:
    """Create or change a skill: shared ones by operators (actor.membership None, staff), a
    tenant's own by its MANAGE_AGENTS members (tenant in the context). Audited."""
    if not isinstance(skill.key, str) or not re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", skill.key):
        raise ServiceError("The key must be 1–64 letters, digits, - or _.")
    if len(skill.instructions or "") > MAX_INSTRUCTIONS_CHARS:
        raise ServiceError(f"The instructions are longer than {MAX_INSTRUCTIONS_CHARS} characters.")
    if not (skill.name or "").strip() or not (skill.instructions or "").strip():
        raise ServiceError("A skill needs a name and instructions.")
    if skill.status not in SkillStatus.values:
        raise ServiceError("Unknown status.")
    if skill.owner_tenant_id is None:
        return _save_shared(actor, skill)
    return _save_own(actor, skill)


def _save_shared(actor: Actor, skill: Skill) -> Skill:
    from tenants.context import all_tenants
    from tenants.models import Tier

    if not (actor.user.is_active and actor.user.is_staff):
        raise ServiceError("Only operators manage shared skills.")
    if skill.extends_id is not None:
        raise ServiceError("A shared skill cannot extend another skill.")
    known = set(Tier.objects.values_list("slug", flat=True))
    if not isinstance(skill.tiers, list) or not set(skill.tiers) <= known:
        raise ServiceError("Unknown tier.")
    with all_tenants("skills: the operator saves a shared skill"):
        if Skill.unscoped.filter(owner_tenant__isnull=True, key=skill.key).exclude(pk=skill.pk).exists():
            raise ServiceError("A shared skill with that key exists.")
        before = _skill_view(Skill.unscoped.get(pk=skill.pk)) if skill.pk else {}
        with transaction.atomic():
            created = skill.pk is None
            skill.save()
            audit.record(
                "skills.skill_created" if created else "skills.skill_updated",
                actor=actor.user,
                target=skill,
                before=before,
                after=_skill_view(skill),
                ip=actor.ip,
            )
            transaction.on_commit(invalidate_all)  # again after commit: a turn may have cached the old rows
    invalidate_all()
    return skill


def _save_own(actor: Actor, skill: Skill) -> Skill:
    tenant = require_tenant()
    if skill.owner_tenant_id != tenant.pk:
        raise ServiceError("That skill is not this organisation's.")
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    require(actor.role, Action.MANAGE_AGENTS)
    skill.tiers = []
    if skill.extends_id is not None and skill.extends_id not in {s.pk for s in tier_shared_skills(tenant)}:
        raise ServiceError(f"The {tenant.tier.name} plan does not offer the skill it extends.")
    if Skill.objects.filter(owner_tenant=tenant, key=skill.key).exclude(pk=skill.pk).exists():
        raise ServiceError("This organisation already has a skill with that key.")
    before = _skill_view(Skill.objects.get(pk=skill.pk)) if skill.pk else {}
    with transaction.atomic():
        created = skill.pk is None
        skill.save()
        audit.record(
            "skills.skill_created" if created else "skills.skill_updated",
            actor=actor.user,
            tenant=tenant,
            target=skill,
            before=before,
            after=_skill_view(skill),
            ip=actor.ip,
        )
        transaction.on_commit(lambda: invalidate_tenant(tenant.pk))
    invalidate_tenant(tenant.pk)
    return skill


def enabled_skill_ids(agent) -> set[int]:
    return set(AgentSkill.objects.filter(agent=agent).values_list("skill_id", flat=True))


def set_agent_skills(actor: Actor, agent, skill_ids: list[int]) -> list[Skill]:
    """The tenant admin's choice of skills for `agent` (replaces the previous one), audited."""
    tenant = require_tenant()
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    require(actor.role, Action.MANAGE_AGENTS)
    allowed = usable_skills(tenant)
    if set(skill_ids) - set(allowed):
        raise ServiceError(f"That skill is not one of this organisation's or offered to the {tenant.tier.name} plan.")
    chosen = [allowed[pk] for pk in sorted(set(skill_ids))]
    before = sorted(Skill.objects.filter(pk__in=enabled_skill_ids(agent)).values_list("key", flat=True))
    with transaction.atomic():
        AgentSkill.objects.filter(agent=agent).delete()
        AgentSkill.objects.bulk_create([AgentSkill(tenant_id=tenant.pk, agent=agent, skill=skill) for skill in chosen])
        audit.record(
            "skills.agent_skills_changed",
            actor=actor.user,
            tenant=tenant,
            target=agent,
            before={"skills": before},
            after={"skills": sorted(skill.key for skill in chosen)},
            ip=actor.ip,
        )
        transaction.on_commit(lambda: invalidate_tenant(tenant.pk))
    invalidate_tenant(tenant.pk)
    return chosen


# --- the turn -------------------------------------------------------------------------------


def compose(skill: Skill, tenant_name: str) -> dict:
    """What the runtime gets for one skill. A bridged skill (a tenant's, extending a shared
    one) is the shared skill's common steps, then the tenant's own steps, labelled."""
    if skill.extends_id is None:
        return {"name": skill.name, "description": skill.description, "instructions": skill.instructions.strip()}
    shared = skill.extends
    instructions = f"{shared.instructions.strip()}\n\n### {tenant_name}'s steps\n\n{skill.instructions.strip()}"
    return {"name": skill.name, "description": skill.description, "instructions": instructions}


def _build(tenant: Tenant) -> dict[int, list[dict]]:
    """agent id → composed skills, for every agent of the tenant that has any (one query)."""
    # A bridged skill runs only while the shared skill it extends is active too.
    extends_active = Q(skill__extends__isnull=True) | Q(skill__extends__status=SkillStatus.ACTIVE)
    rows = (
        AgentSkill.objects.filter(skill__status=SkillStatus.ACTIVE)
        .filter(extends_active)
        .select_related("skill__extends")
        .order_by("skill__name", "skill_id")
    )
    tier = tenant.tier.slug
    by_agent: dict[int, list[dict]] = {}
    for row in rows:
        skill = row.skill
        offered = skill.extends if skill.extends_id else skill
        if offered.owner_tenant_id is None and tier not in (offered.tiers or []):
            continue  # a shared skill the tier is no longer offered (or a bridge onto one)
        by_agent.setdefault(row.agent_id, []).append(compose(skill, tenant.name))
    return by_agent


def turn_cache_keys(tenant: Tenant) -> list[str] | None:
    """The Redis keys skills_for_turn reads for `tenant`, for a caller that reads them in a
    round trip it makes anyway (agents.turns: with the turn's "running" status, on the relay's
    Redis) and hands their raw values back as `cached`. None unless the cache is that Redis."""
    from django.conf import settings
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    backend = caches["default"]
    if not isinstance(backend, RedisCache) or backend._servers != [settings.REDIS_URL]:
        return None
    return [backend.make_and_validate_key(key) for key in _turn_keys(tenant.pk)]


def _turn_keys(tenant_id: int) -> list[str]:
    """The platform's generation, the tenant's, and the tenant's entry, in that order."""
    return [_GEN_KEY, _tenant_gen_key(tenant_id), _tenant_key(tenant_id)]


def skills_for_turn(tenant: Tenant, agent, cached: list | None = None) -> list[dict]:
    """The skills `agent` follows in `tenant`, composed, from the cache when it is current.
    `cached`: the raw values of turn_cache_keys(tenant), read by the caller (else read here)."""
    names = _turn_keys(tenant.pk)
    gen_key, tenant_gen_key, key = names
    if cached is not None:
        loads = cache._cache._serializer.loads  # as RedisCache.get_many decodes them
        values = {name: loads(raw) for name, raw in zip(names, cached, strict=True) if raw is not None}
    else:
        values = optional_cache.get_many(names)
    # Both generations as read before the rows: a change committing meanwhile moves one on.
    gen = (values.get(gen_key, 0), values.get(tenant_gen_key, 0))
    cached = values.get(key)
    # What the entry was built from besides the rows: the tier (which shared skills it is
    # offered) and the tenant's name (the heading of its bridged steps). A change to either
    # rebuilds at once, with no invalidation to forget.
    built_from = (tenant.tier_id, tenant.name)
    if cached is not None and cached[0] == gen and cached[1] == built_from:
        by_agent = cached[2]
    else:
        with tenant_context(tenant):
            by_agent = _build(tenant)
        optional_cache.set(key, (gen, built_from, by_agent), SKILLS_TTL)
    return by_agent.get(agent.pk, [])
