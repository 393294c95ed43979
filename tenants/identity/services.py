"""Administrative actions on machine identities: API clients and agent identities.

Every change is audited; secrets are returned once, to the caller, and only
their hashes are stored.
"""

from __future__ import annotations

import secrets

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tenants import audit, entitlements
from tenants.context import all_tenants, require_tenant
from tenants.identity import oauth
from tenants.identity import scopes as scope_lib
from tenants.identity.models import AgentGrant, AgentIdentity, ApiClient, hash_secret, new_secret, with_owner_role
from tenants.models import Tenant
from tenants.roles import Action, Role, can, require
from tenants.services import OPERATOR_REASON, Actor, ServiceError, _check_actor_tenant, _require_operator


def create_api_client(actor: Actor, *, name: str, scopes: list[str]) -> tuple[ApiClient, str]:
    """A machine client for the current tenant; its scopes ⊆ the creator's own."""
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_API_CLIENTS)
    if not entitlements.has_feature(tenant, "api_access"):
        raise ServiceError(f"API access is not included in the {tenant.tier.name} tier.")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("Give the client a name of at most 100 characters.")
    requested = scope_lib.parse(scopes)
    if not requested:
        raise ServiceError("Choose at least one scope.")
    if scope_lib.unknown(requested):
        raise ServiceError(f"Unknown scopes: {', '.join(sorted(scope_lib.unknown(requested)))}.")
    if not requested <= scope_lib.CLIENT_SCOPES:
        unusable = ", ".join(sorted(requested - scope_lib.CLIENT_SCOPES))
        raise ServiceError(f"An API client can only read; these need a person: {unusable}.")
    own = scope_lib.scopes_for_role(actor.role)
    if not requested <= own:
        raise ServiceError(f"You cannot grant scopes you do not have: {', '.join(sorted(requested - own))}.")
    secret = new_secret()
    client = ApiClient(
        tenant=tenant,
        name=name,
        client_id=oauth.api_client_id(tenant, secrets.token_hex(8)),
        secret_hash=hash_secret(secret),
        scopes=sorted(requested),
        created_by=actor.user,
        owner=actor.user,
    )
    with transaction.atomic():
        client.save()
        audit.record(
            "api_client.created",
            actor=actor.user,
            tenant=tenant,
            target=client,
            after={"name": name, "client_id": client.client_id, "scopes": client.scopes},
            ip=actor.ip,
        )
    return client, secret


def revoke_api_client(actor: Actor, client: ApiClient) -> None:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_API_CLIENTS)
    with transaction.atomic():
        changed = ApiClient.objects.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed != 1:
            raise ServiceError("This client is already revoked.")
        audit.record("api_client.revoked", actor=actor.user, tenant=tenant, target=client, ip=actor.ip)


def take_over_api_client(actor: Actor, client: ApiClient) -> tuple[ApiClient, str]:
    """The actor becomes the owner of a paused client, which works again on their rights,
    with a new secret. Returns the client and the secret, to be shown once.

    Only a paused client: an owner who still has the rights keeps theirs. Only an actor who
    could create the client today (the same rule as create_api_client), so taking over never
    hands anyone a scope their role lacks. A client is usually paused because its owner
    left, and they may hold its secret: so the secret is replaced, and every token issued
    before (exchanged ones included) is refused from now on (`credentials_generation`)."""
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_API_CLIENTS)
    current = with_owner_role(ApiClient.objects.select_related("owner")).filter(pk=client.pk).first()
    if current is None or not current.is_active:
        raise ServiceError("This client is revoked; it cannot be taken over.")
    if not current.is_paused:
        raise ServiceError("This client is not paused: its owner still has the rights to it.")
    refusal = take_over_refusal(current, actor.role)
    if refusal:
        raise ServiceError(refusal)
    secret = new_secret()
    with transaction.atomic():
        # Conditional on the owner read above: of two admins taking it over at once, one
        # wins, and only the secret shown to that one works.
        changed = ApiClient.objects.filter(pk=current.pk, revoked_at__isnull=True, owner_id=current.owner_id).update(
            owner=actor.user,
            secret_hash=hash_secret(secret),
            credentials_generation=F("credentials_generation") + 1,
        )
        if changed != 1:
            raise ServiceError("This client changed meanwhile; reload the page and try again.")
        audit.record(
            "api_client.taken_over",
            actor=actor.user,
            tenant=tenant,
            target=current,
            before={"owner": current.owner.email if current.owner else None, "paused": current.pause_reason},
            after={"owner": actor.user.email, "secret": "rotated", "earlier_tokens": "refused"},
            ip=actor.ip,
        )
    current.refresh_from_db(fields=["owner", "secret_hash", "credentials_generation"])
    current.owner_role = actor.role  # as with_owner_role would read it now: no longer paused
    return current, secret


def take_over_refusal(client: ApiClient, role: str | None) -> str:
    """Why someone in `role` may not take `client` over ("" when they may): their role must
    be able to grant every scope it has, as it would to create it."""
    if not can(role, Action.MANAGE_API_CLIENTS):
        return "Your role cannot manage API clients."
    missing = set(client.scopes) - scope_lib.scopes_for_role(role)
    if not missing:
        return ""
    if scope_lib.scopes_for_role(Role.OWNER) >= set(client.scopes):
        return f"Only an owner can take it over: it holds {scope_lib.format_scope(missing)}."
    return f"Your role cannot grant {scope_lib.format_scope(missing)}, so you cannot take it over."


def paused_api_clients_of(user) -> list[ApiClient]:
    """The current tenant's clients owned by `user` that are paused (for the members page's notices)."""
    clients = with_owner_role(ApiClient.objects.filter(owner=user, revoked_at__isnull=True).select_related("owner"))
    return [client for client in clients if client.is_paused]


def record_api_clients_paused(actor: Actor, user, role_before: str | None) -> list[ApiClient]:
    """After `user` lost a role (or their membership) in the current tenant: one audit entry,
    with the reason, for each of their clients that worked before and is paused now, in the
    caller's transaction. The pause itself needs no write: it is read live."""
    tenant = require_tenant()
    paused = [client for client in paused_api_clients_of(user) if client.owner_may_hold(role_before)]
    for client in paused:
        audit.record(
            "api_client.paused",
            actor=actor.user,
            tenant=tenant,
            target=client,
            after={"reason": client.pause_reason},
            ip=actor.ip,
        )
    return paused


def _new_agent_client_id() -> str:
    return f"{oauth.AGENT_CLIENT_PREFIX}_{secrets.token_hex(10)}"


def create_shared_agent_identity(
    operator, *, name: str, allowed_scopes: list[str], ip: str | None = None
) -> tuple[AgentIdentity, str]:
    """An operator-owned agent that tenants may allow to act for their users."""
    _require_operator(operator)
    return _create_agent_identity(operator, name=name, allowed_scopes=allowed_scopes, owner=None, ip=ip)


def create_tenant_agent_identity(actor: Actor, *, name: str, allowed_scopes: list[str]) -> tuple[AgentIdentity, str]:
    """A tenant's own agent; it is allowed to act in its tenant at once."""
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_AGENTS)
    agent, secret = _create_agent_identity(
        actor.user, name=name, allowed_scopes=allowed_scopes, owner=tenant, ip=actor.ip
    )
    AgentGrant.objects.create(agent=agent, granted_by=actor.user)
    return agent, secret


def _create_agent_identity(user, *, name, allowed_scopes, owner, ip) -> tuple[AgentIdentity, str]:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("Give the agent a name of at most 100 characters.")
    requested = scope_lib.parse(allowed_scopes)
    if scope_lib.unknown(requested):
        raise ServiceError(f"Unknown scopes: {', '.join(sorted(scope_lib.unknown(requested)))}.")
    secret = new_secret()
    agent = AgentIdentity(
        name=name,
        client_id=_new_agent_client_id(),
        secret_hash=hash_secret(secret),
        owner_tenant=owner,
        allowed_scopes=sorted(requested),
    )
    with transaction.atomic():
        agent.save()
        record = {"name": name, "client_id": agent.client_id, "allowed_scopes": agent.allowed_scopes}
        if owner is None:
            with all_tenants(OPERATOR_REASON):
                audit.record("agent_identity.created", actor=user, target=agent, after=record, ip=ip)
        else:
            audit.record("agent_identity.created", actor=user, tenant=owner, target=agent, after=record, ip=ip)
    return agent, secret


def rotate_agent_secret(user, agent: AgentIdentity, *, actor: Actor | None = None, ip: str | None = None) -> str:
    """New secret; the old one stops working at once. Operators rotate shared
    agents; a tenant's admins rotate that tenant's own agents."""
    if agent.owner_tenant_id is None:
        _require_operator(user)
    else:
        if actor is None:
            raise ServiceError("A tenant agent is rotated by its tenant's admins.")
        tenant = _check_actor_tenant(actor)
        require(actor.role, Action.MANAGE_AGENTS)
        if tenant.pk != agent.owner_tenant_id:
            raise ServiceError("This agent belongs to another tenant.")
    secret = new_secret()
    with transaction.atomic():
        AgentIdentity.objects.filter(pk=agent.pk).update(secret_hash=hash_secret(secret), rotated_at=timezone.now())
        if agent.owner_tenant_id is None:
            with all_tenants(OPERATOR_REASON):
                audit.record("agent_identity.rotated", actor=user, target=agent, ip=ip)
        else:
            audit.record("agent_identity.rotated", actor=user, tenant=agent.owner_tenant, target=agent, ip=ip)
    return secret


def visible_agents_for_tenant():
    """Shared agents plus the current tenant's own, with whether each may act here."""
    tenant = require_tenant()
    granted = set(AgentGrant.objects.values_list("agent_id", flat=True))
    agents = AgentIdentity.objects.filter(disabled_at__isnull=True).filter(
        owner_tenant__isnull=True
    ) | AgentIdentity.objects.filter(owner_tenant=tenant)
    return [(agent, agent.pk in granted) for agent in agents.order_by("name")]


def allow_agent(actor: Actor, agent: AgentIdentity) -> AgentGrant:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_AGENTS)
    if agent.owner_tenant_id not in (None, tenant.pk) or not agent.is_active:
        raise ServiceError("This agent is not available to your tenant.")
    try:
        with transaction.atomic():
            grant = AgentGrant.objects.create(agent=agent, granted_by=actor.user)
            audit.record("agent.allowed", actor=actor.user, tenant=tenant, target=agent, ip=actor.ip)
    except IntegrityError:
        raise ServiceError(f"{agent.name} is already allowed.")
    return grant


def disallow_agent(actor: Actor, agent: AgentIdentity) -> None:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_AGENTS)
    with transaction.atomic():
        deleted, _ = AgentGrant.objects.filter(agent=agent).delete()
        if not deleted:
            raise ServiceError(f"{agent.name} was not allowed.")
        audit.record("agent.disallowed", actor=actor.user, tenant=tenant, target=agent, ip=actor.ip)


def set_agent_identity_enabled(operator, agent: AgentIdentity, *, enabled: bool, ip: str | None = None) -> None:
    """Operators switch any agent identity off (it can no longer authenticate or act
    for anyone) and on again. Grants are kept, so switching it on restores them."""
    _require_operator(operator)
    rows = AgentIdentity.objects.filter(pk=agent.pk)
    with transaction.atomic():
        if enabled:
            changed = rows.filter(disabled_at__isnull=False).update(disabled_at=None)
        else:
            changed = rows.filter(disabled_at__isnull=True).update(disabled_at=timezone.now())
        if changed != 1:
            raise ServiceError(f"{agent.name} is already {'enabled' if enabled else 'disabled'}.")
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "agent_identity.enabled" if enabled else "agent_identity.disabled",
                actor=operator,
                tenant=agent.owner_tenant,
                target=agent,
                before={"enabled": not enabled},
                after={"enabled": enabled},
                ip=ip,
            )
    agent.refresh_from_db(fields=["disabled_at"])


def set_mfa_requirement(actor: Actor, *, required: bool) -> Tenant:
    """Whether the current tenant's members must use two-factor authentication.

    Whoever turns it on must already use it themselves, or the next page they
    open would send them to set it up.
    """
    from tenants.identity.mfa import has_totp

    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_SECURITY)
    if required and not has_totp(actor.user):
        raise ServiceError("Set up two-factor authentication for your own account first.")
    with transaction.atomic():
        changed = Tenant.objects.filter(pk=tenant.pk, require_mfa=not required).update(
            require_mfa=required, updated_at=timezone.now()
        )
        if changed != 1:
            raise ServiceError(f"Two-factor authentication is already {'required' if required else 'optional'}.")
        audit.record(
            "tenant.mfa_required" if required else "tenant.mfa_optional",
            actor=actor.user,
            tenant=tenant,
            target=tenant,
            before={"require_mfa": not required},
            after={"require_mfa": required},
            ip=actor.ip,
        )
    tenant.require_mfa = required
    return tenant


def operator_revoke_api_client(operator, client: ApiClient, ip: str | None = None) -> None:
    """An operator stops a tenant's client (e.g. a leaked secret reported to support)."""
    _require_operator(operator)
    with transaction.atomic():
        changed = ApiClient.unscoped.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed != 1:
            raise ServiceError("This client is already revoked.")
        audit.record(
            "api_client.revoked",
            actor=operator,
            tenant=client.tenant,
            target=client,
            after={"by": "platform operator"},
            ip=ip,
        )
