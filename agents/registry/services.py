"""The agent registry: versions of an agent, their review (four eyes), and publishing.

* `create_agent` writes a new agent as a draft (members cannot see it) with version 1;
  `create_version` adds a draft version to an agent; `submit` asks for a review;
  `approve` publishes a submitted version; `reject` refuses it with a reason;
  `roll_back` submits a copy of an earlier version as a new version.
* Who: a shared agent (no owner tenant) is the operators' (is_staff) to author and to
  approve; a tenant's own agent is its MANAGE_AGENTS members'. Either way the approver
  is never the version's author.
* Approving copies the version's fields onto the live `Agent` row and sets
  `Agent.published_version`, so the chat turn reads exactly what it read before the
  registry existed (one row, no extra query). An agent with no workload identity gets
  one when its first version is approved: a published agent needs one to be chat-able.
* Every transition is in the audit log with before and after.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from agents import services as agent_services
from agents.models import Agent, AgentStatus, ModelOffering
from agents.registry.models import AgentVersion, VersionState
from tenants import audit
from tenants.context import all_tenants, current_scope, require_tenant
from tenants.models import Tenant, Tier
from tenants.roles import Action, require
from tenants.services import Actor, ServiceError

OPERATOR_REASON = "operator console: agent registry"
NAME_MAX = 100
DESCRIPTION_MAX = 300
INSTRUCTIONS_MAX = 20_000
NOTE_MAX = 500
SLUG_MAX = 60
# What an identity made for a registry agent may do: the scopes the demo's agents have
# (chat for a member, read the tenant's knowledge, keep and recall the member's memory).
IDENTITY_SCOPES = ["agents:invoke", "kb:read", "tenant:read", "memory:read", "memory:write", "tools:invoke"]

VERSION_FIELDS = ["name", "description", "instructions", "model", "offered_to_tiers"]
AUDIT_FIELDS = ["number", "state", "name", "description", "model", "offered_to_tiers", "change_note"]


class VersionConflict(ServiceError):
    """The version's state (or the agent's numbering), changed by a request that ran at the
    same moment or before, refuses this one: HTTP 409 in the API, a message on the screens."""

    status = 409


@dataclass(frozen=True)
class Draft:
    """What a person wrote in the form or the API body, before it is checked."""

    name: str
    instructions: str
    description: str = ""
    model_key: str = ""
    offered_to_tiers: tuple[str, ...] = ()
    change_note: str = ""


# --- who may do what ------------------------------------------------------------------------


def _check_rights(agent_owner_id: int | None, user, actor: Actor | None) -> Tenant | None:
    """The tenant the change is made in (None for a shared agent), or PermissionDenied."""
    if agent_owner_id is None:
        if not (user.is_authenticated and user.is_active and user.is_staff):
            raise PermissionDenied("Only operators author and approve shared agents.")
        return None
    tenant = require_tenant()
    if actor is None or actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise PermissionDenied("You are not a member of this tenant.")
    require(actor.role, Action.MANAGE_AGENTS)
    if tenant.pk != agent_owner_id:
        raise PermissionDenied("This agent belongs to another tenant.")
    return tenant


def _audit(step: str, user, version: AgentVersion, tenant: Tenant | None, ip, before=None, after=None):
    # Literal codes, so tests/tenants/test_audit_labels.py can read every one of them.
    action = {
        "created": "registry.version_created",
        "submitted": "registry.version_submitted",
        "approved": "registry.version_approved",
        "rejected": "registry.version_rejected",
        "rolled_back": "registry.version_rolled_back",
    }.get(step, "registry.version_created")
    if tenant is None:
        with all_tenants(OPERATOR_REASON):
            audit.record(action, actor=user, target=version, before=before, after=after, ip=ip)
    else:
        audit.record(action, actor=user, tenant=tenant, target=version, before=before, after=after, ip=ip)


def _snapshot(version: AgentVersion) -> dict:
    # The model by its key (what people and the API call it), not its row id.
    return audit.snapshot(version, AUDIT_FIELDS) | {"model": version.model.key if version.model_id else None}


# --- access helpers (404 for missing and foreign alike) --------------------------------------


def shared_agents():
    """Every shared agent, for the operator console (inside all_tenants)."""
    return Agent.unscoped.filter(owner_tenant__isnull=True).select_related("model", "identity")


def own_agents(tenant: Tenant):
    """The tenant's own agents (any status), for its admins."""
    return Agent.objects.filter(owner_tenant=tenant).select_related("model", "identity")


def access_shared_agent(agent_id) -> Agent | None:
    return shared_agents().filter(pk=agent_id).first() if isinstance(agent_id, int) else None


def access_own_agent(tenant: Tenant, agent_id) -> Agent | None:
    return own_agents(tenant).filter(pk=agent_id).first() if isinstance(agent_id, int) else None


def versions_of(agent: Agent):
    manager = AgentVersion.unscoped if agent.owner_tenant_id is None else AgentVersion.objects
    return manager.filter(agent=agent).select_related("model").order_by("-number")


def access_version(agent: Agent, number) -> AgentVersion | None:
    return versions_of(agent).filter(number=number).first() if isinstance(number, int) else None


def access_shared_version(version_id) -> AgentVersion | None:
    """A version of a shared agent (the operators'), for the operator API (inside all_tenants)."""
    if not isinstance(version_id, int):
        return None
    return (
        AgentVersion.unscoped.filter(owner_tenant__isnull=True, agent__owner_tenant__isnull=True, pk=version_id)
        .select_related("agent", "model")
        .first()
    )


def access_tenant_version(tenant: Tenant, version_id) -> AgentVersion | None:
    """A version of one of the tenant's own agents (shared agents' versions are the operators')."""
    if not isinstance(version_id, int):
        return None
    return AgentVersion.objects.filter(owner_tenant=tenant, pk=version_id).select_related("agent", "model").first()


def pending_reviews(agents) -> dict[int, int]:
    """Agent id → how many of its versions wait for a review."""
    ids = [agent.pk for agent in agents]
    if not ids:
        return {}
    manager = AgentVersion.unscoped if current_scope().all_tenants else AgentVersion.objects
    counts: dict[int, int] = {}
    for agent_id in manager.filter(agent_id__in=ids, state=VersionState.SUBMITTED).values_list("agent_id", flat=True):
        counts[agent_id] = counts.get(agent_id, 0) + 1
    return counts


def shared_pending_total() -> int:
    """How many versions of shared agents wait for a review (operator console, inside all_tenants)."""
    return AgentVersion.unscoped.filter(agent__owner_tenant__isnull=True, state=VersionState.SUBMITTED).count()


# --- checking what was written ---------------------------------------------------------------


def _clean_text(value, label: str, limit: int, *, required: bool) -> str:
    text = (value or "").strip() if isinstance(value, str) else ""
    if required and not text:
        raise ServiceError({_field(label): f"The {label} cannot be empty."})
    if len(text) > limit:
        raise ServiceError({_field(label): f"The {label} may be at most {limit} characters."})
    return text


def _field(label: str) -> str:
    return {"change note": "change_note"}.get(label, label)


def _tier_allows(tier: Tier, offering: ModelOffering) -> bool:
    """The routing rule of agents.services.route_model: a tier uses the models it lists; a
    tenant's fine-tune stands in for the shared model it is based on."""
    allowed = [key for key in (tier.allowed_models or []) if isinstance(key, str)]
    if offering.key in allowed:
        return True
    return offering.base_id is not None and offering.base is not None and offering.base.key in allowed


def reachable_models(tenant: Tenant | None) -> dict[str, ModelOffering]:
    """The models a version may name, by key: those a turn could route to (agents.services.
    route_model: active, of a provider this deployment reaches, seen by the tenant). For a
    tenant's own agent, also within its tier (model_choices); shared agents: shared models."""
    if tenant is not None:
        return agent_services.visible_offerings(tenant)
    rows = ModelOffering.unscoped.filter(
        is_active=True, provider__in=settings.MODEL_PROVIDERS, owner_tenant__isnull=True
    )
    return {offering.key: offering for offering in rows}


def model_choices(tenant: Tenant | None) -> list[ModelOffering]:
    """What the form offers: the reachable models the tenant's plan includes (all shared ones
    for the operators)."""
    models = reachable_models(tenant).values()
    if tenant is not None:
        models = [m for m in models if _tier_allows(tenant.tier, m)]
    return sorted(models, key=lambda m: m.name)


def _clean_model(model_key: str, tenant: Tenant | None) -> ModelOffering | None:
    key = (model_key or "").strip() if isinstance(model_key, str) else ""
    if not key:
        if tenant is None:
            return None  # a shared agent may leave it to each tier's default
        raise ServiceError({"model": "Choose a model."})
    offering = reachable_models(tenant).get(key)
    if offering is None:
        raise ServiceError({"model": f"Unknown model “{key[:100]}”."})
    if tenant is not None and not _tier_allows(tenant.tier, offering):
        raise ServiceError({"model": f"The {tenant.tier.name} plan does not include {offering.name}."})
    return offering


def _clean_tiers(slugs, tenant: Tenant | None) -> list[str]:
    if tenant is not None:
        return []  # a tenant's own agent is offered to that tenant only
    chosen = sorted({s.strip() for s in slugs if isinstance(s, str) and s.strip()})
    known = set(Tier.objects.filter(slug__in=chosen).values_list("slug", flat=True))
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ServiceError({"offered_to_tiers": f"Unknown tiers: {', '.join(x[:60] for x in unknown)}."})
    return chosen


def _clean(draft: Draft, tenant: Tenant | None) -> dict:
    return {
        "name": _clean_text(draft.name, "name", NAME_MAX, required=True),
        "description": _clean_text(draft.description, "description", DESCRIPTION_MAX, required=False),
        "instructions": _clean_text(draft.instructions, "instructions", INSTRUCTIONS_MAX, required=True),
        "model": _clean_model(draft.model_key, tenant),
        "offered_to_tiers": _clean_tiers(draft.offered_to_tiers, tenant),
        "change_note": _clean_text(draft.change_note, "change note", NOTE_MAX, required=False),
    }


# --- transitions --------------------------------------------------------------------------


def _new_version(agent: Agent, fields: dict, user, **extra) -> AgentVersion:
    manager = AgentVersion.unscoped if agent.owner_tenant_id is None else AgentVersion.objects
    last = manager.filter(agent=agent).aggregate(n=Max("number"))["n"] or 0
    version = AgentVersion(
        agent=agent,
        owner_tenant_id=agent.owner_tenant_id,
        number=last + 1,
        author=user,
        author_email=user.email,
        **fields,
        **extra,
    )
    try:
        with transaction.atomic():
            version.save(force_insert=True)
    except IntegrityError:
        raise VersionConflict("Someone added a version of this agent at the same moment; try again.")
    return version


def create_agent(user, draft: Draft, *, slug: str = "", actor: Actor | None = None, tenant: Tenant | None = None):
    """A new agent (draft: nobody can chat with it yet) and its version 1 (draft).
    `tenant` None: a shared agent (operators); else the tenant's own (its MANAGE_AGENTS members)."""
    owner = _check_rights(tenant.pk if tenant is not None else None, user, actor)
    fields = _clean(draft, owner)
    slug = slugify(slug or fields["name"])[:SLUG_MAX].strip("-")
    if not slug:
        raise ServiceError({"slug": "Give the agent a short name of letters, digits or hyphens."})
    rows = (
        Agent.unscoped.filter(owner_tenant__isnull=True) if owner is None else Agent.objects.filter(owner_tenant=owner)
    )
    if rows.filter(slug=slug).exists():
        raise ServiceError({"slug": f"An agent called “{slug}” already exists."})
    with transaction.atomic():
        agent = Agent(
            slug=slug,
            owner_tenant=owner,
            status=AgentStatus.DRAFT,
            **{k: v for k, v in fields.items() if k in VERSION_FIELDS},
        )
        try:
            with transaction.atomic():
                agent.save(force_insert=True)
        except IntegrityError:
            raise ServiceError({"slug": f"An agent called “{slug}” already exists."})
        version = _new_version(agent, fields, user)
        _audit("created", user, version, owner, _ip(actor), after=_snapshot(version))
    return agent, version


def create_version(user, agent: Agent, draft: Draft, *, actor: Actor | None = None) -> AgentVersion:
    owner = _check_rights(agent.owner_tenant_id, user, actor)
    fields = _clean(draft, owner)
    with transaction.atomic():
        version = _new_version(agent, fields, user)
        _audit("created", user, version, owner, _ip(actor), after=_snapshot(version))
    return version


def _move(version: AgentVersion, from_state: str, **changes) -> bool:
    """Change the state only if it is still `from_state`: two reviewers clicking at the same
    moment cannot both publish (the second finds the row already moved)."""
    manager = AgentVersion.unscoped if version.owner_tenant_id is None else AgentVersion.objects
    moved = manager.filter(pk=version.pk, state=from_state).update(**changes)
    if moved:
        for name, value in changes.items():
            setattr(version, name, value)
    return bool(moved)


def submit(user, version: AgentVersion, *, actor: Actor | None = None) -> AgentVersion:
    owner = _check_rights(version.owner_tenant_id, user, actor)
    before = _snapshot(version)
    with transaction.atomic():
        if not _move(version, VersionState.DRAFT, state=VersionState.SUBMITTED, submitted_at=timezone.now()):
            raise VersionConflict(f"Version {version.number} is not a draft any more.")
        _audit("submitted", user, version, owner, _ip(actor), before=before, after=_snapshot(version))
    return version


def approve(user, version: AgentVersion, *, actor: Actor | None = None) -> AgentVersion:
    """Publish a submitted version: the live agent takes its fields (four eyes: never its author's)."""
    owner = _check_rights(version.owner_tenant_id, user, actor)
    if version.author_id is not None and version.author_id == user.pk:
        raise PermissionDenied("You wrote this version: someone else must review it.")
    before = _snapshot(version)
    with transaction.atomic():
        now = timezone.now()
        changes = dict(state=VersionState.APPROVED, reviewed_by=user, reviewed_by_email=user.email, reviewed_at=now)
        if not _move(version, VersionState.SUBMITTED, **changes):
            raise VersionConflict(f"Version {version.number} is not waiting for a review.")
        agents = Agent.unscoped if version.owner_tenant_id is None else Agent.objects
        agent = agents.select_for_update().get(pk=version.agent_id)
        live_before = audit.snapshot(agent, ["status", "published_version", "name", "model", "offered_to_tiers"])
        manager = AgentVersion.unscoped if version.owner_tenant_id is None else AgentVersion.objects
        manager.filter(agent_id=agent.pk, state=VersionState.APPROVED).exclude(pk=version.pk).update(
            state=VersionState.SUPERSEDED
        )
        for name in VERSION_FIELDS:
            setattr(agent, name, getattr(version, name))
        agent.status = AgentStatus.PUBLISHED
        agent.published_version = version.number
        if agent.identity_id is None:
            agent.identity = _new_identity(user, agent, actor)
        agent.save()
        after = _snapshot(version) | {
            "agent": audit.snapshot(agent, ["status", "published_version", "name", "model", "offered_to_tiers"])
        }
        _audit(
            "approved",
            user,
            version,
            owner,
            _ip(actor),
            before=before | {"agent": live_before},
            after=after,
        )
    version.agent = agent
    return version


def reject(user, version: AgentVersion, reason: str, *, actor: Actor | None = None) -> AgentVersion:
    owner = _check_rights(version.owner_tenant_id, user, actor)
    reason = _clean_text(reason, "reason", NOTE_MAX, required=True)
    before = _snapshot(version)
    with transaction.atomic():
        changes = dict(
            state=VersionState.REJECTED,
            reviewed_by=user,
            reviewed_by_email=user.email,
            reviewed_at=timezone.now(),
            review_note=reason,
        )
        if not _move(version, VersionState.SUBMITTED, **changes):
            raise VersionConflict(f"Version {version.number} is not waiting for a review.")
        after = _snapshot(version) | {"reason": reason}
        _audit("rejected", user, version, owner, _ip(actor), before=before, after=after)
    return version


def roll_back(user, version: AgentVersion, *, actor: Actor | None = None) -> AgentVersion:
    """A new version with an earlier one's fields, submitted for review like any other."""
    owner = _check_rights(version.owner_tenant_id, user, actor)
    if version.state not in (VersionState.APPROVED, VersionState.SUPERSEDED):
        raise VersionConflict("Only a version that was published can be rolled back to.")
    fields = {name: getattr(version, name) for name in VERSION_FIELDS}
    fields["change_note"] = f"Roll back to version {version.number}"
    with transaction.atomic():
        copy = _new_version(
            version.agent,
            fields,
            user,
            rolled_back_from=version.number,
            state=VersionState.SUBMITTED,
            submitted_at=timezone.now(),
        )
        _audit("rolled_back", user, copy, owner, _ip(actor), after=_snapshot(copy))
    return copy


def _new_identity(user, agent: Agent, actor: Actor | None):
    """A workload identity for an agent published for the first time (the tenant's own is
    allowed in its tenant at once, as on the agent identities screen)."""
    from tenants.identity import services as identity_services

    if agent.owner_tenant_id is None:
        identity, _secret = identity_services.create_shared_agent_identity(
            user, name=agent.name, allowed_scopes=IDENTITY_SCOPES, ip=_ip(actor)
        )
    else:
        identity, _secret = identity_services.create_tenant_agent_identity(
            actor, name=agent.name, allowed_scopes=IDENTITY_SCOPES
        )
    # The secret is not shown here: whoever runs the agent outside the portal rotates it
    # on the agent identities page to get one.
    return identity


def _ip(actor: Actor | None):
    return actor.ip if actor is not None else None


# --- reading -----------------------------------------------------------------------------------


def instructions_diff(old: str, new: str, *, old_label: str, new_label: str) -> list[tuple[str, str]]:
    """(kind, line) pairs of a unified diff; kind is add, del, hunk or same (for the template)."""
    lines = difflib.unified_diff(
        (old or "").splitlines(), (new or "").splitlines(), fromfile=old_label, tofile=new_label, lineterm=""
    )
    out = []
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        out.append((kind, line))
    return out


def live_version(agent: Agent, versions) -> AgentVersion | None:
    return next((v for v in versions if v.number == agent.published_version), None)


def search_catalogue(agents, query: str):
    """The agents whose name or description contains `query` (any case)."""
    needle = (query or "").strip().casefold()[:100]
    if not needle:
        return list(agents)
    return [a for a in agents if needle in a.name.casefold() or needle in (a.description or "").casefold()]
