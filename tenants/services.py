"""Administrative actions of the tenancy core.

Views, the API, the operator console, commands and tasks all call these; each
checks the role table, changes state in one transaction and writes the audit
log. They raise `ServiceError` (a ValidationError) for a request that cannot be
carried out, and `PermissionDenied` for one the actor may not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from tenants import audit, entitlements
from tenants.context import all_tenants, require_tenant, tenant_context
from tenants.identity.scopes import ACTION_SCOPES
from tenants.models import (
    AuditLog,
    DeploymentModel,
    Invitation,
    InvitationStatus,
    Membership,
    Tenant,
    TenantStatus,
    Tier,
    User,
    hash_invitation_secret,
)
from tenants.roles import Action, Role, require
from tenants.sessions import end_sessions_of_users_left_without_a_tenant


class ServiceError(ValidationError):
    """A request that is well-formed but cannot be carried out (shown to the user)."""

    @property
    def text(self) -> str:
        """Every message (of every field) as one line, for a flash message or a command's error."""
        return " ".join(self.messages)


@dataclass(frozen=True)
class Actor:
    """Who is acting, as what, from where."""

    user: User
    membership: Membership | None = None
    ip: str | None = None
    # The scopes of the access token the request came with; None for a signed-in
    # session, which may do what the role allows.
    scopes: frozenset[str] | None = None

    @property
    def role(self) -> str | None:
        return self.membership.role if self.membership is not None else None

    @classmethod
    def from_request(cls, request) -> Actor:
        """The signed-in person, their membership in the request's tenant, their address,
        and what their access token (if any) was narrowed to."""
        from tenants.audit import client_ip
        from tenants.identity.tokens import AccessToken

        token = getattr(request, "auth", None)
        scopes = token.scopes if isinstance(token, AccessToken) else None
        return cls(user=request.user, membership=request.membership, ip=client_ip(request), scopes=scopes)


def _require_owner_rights_for(actor: Actor, *roles: str) -> None:
    if Role.OWNER in roles:
        require(actor.role, Action.MANAGE_OWNERS)
        # The API checked the scope of the action itself (members:write); handing out or
        # taking away the owner role needs one more, which a narrowed token may lack.
        needed = ACTION_SCOPES[Action.MANAGE_OWNERS]
        if actor.scopes is not None and needed not in actor.scopes:
            raise PermissionDenied(f"The access token lacks the scope {needed}.")


def _check_actor_tenant(actor: Actor) -> Tenant:
    tenant = require_tenant()
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    return tenant


# --- invitations ------------------------------------------------------------------


def invite_member(actor: Actor, *, email: str, role: str) -> Invitation:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.INVITE_MEMBERS)
    if role not in Role.values:
        raise ServiceError(f"Unknown role {role!r}.")
    _require_owner_rights_for(actor, role)
    return _create_invitation(tenant, email=email, role=role, by=actor.user, ip=actor.ip)


def _create_invitation(tenant: Tenant, *, email: str, role: str, by: User, ip: str | None) -> Invitation:
    """Invite `email` as `role` (run in the tenant's context); whoever may do it was checked."""
    email = User.objects.normalize_email(email).strip().lower()
    if Membership.objects.filter(user__email__iexact=email).exists():
        raise ServiceError(f"{email} is already a member of {tenant.name}.")
    invitation = Invitation(
        tenant=tenant,
        email=email,
        role=role,
        invited_by=by,
        expires_at=timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS),
    )
    invitation.rotate_secret()
    try:
        with transaction.atomic():
            invitation.save()
    except IntegrityError:
        raise ServiceError(f"{email} already has a pending invitation; resend it instead.")
    audit.record(
        "invitation.created",
        actor=by,
        tenant=tenant,
        target=invitation,
        after={"email": email, "role": role},
        ip=ip,
    )
    _enqueue_invitation_email(invitation)
    return invitation


def _enqueue_invitation_email(invitation: Invitation) -> None:
    from tenants.tasks import send_invitation_email

    tenant_id, invitation_id = invitation.tenant_id, invitation.pk
    transaction.on_commit(lambda: send_invitation_email.delay(tenant_id, invitation_id))


def deliver_invitation(tenant: Tenant, invitation_id: int) -> bool:
    """Send the invitation email (run by the Celery task, in the tenant's context)."""
    invitation = Invitation.objects.select_related("invited_by").filter(pk=invitation_id).first()
    if invitation is None or not invitation.is_open:
        return False
    link = settings.SITE_URL + reverse("invitation_accept", args=[invitation.token])
    context = {"invitation": invitation, "tenant": tenant, "link": link}
    send_mail(
        subject=f"You are invited to {tenant.name} on Tenant Portal",
        message=render_to_string("tenants/email/invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[invitation.email],
    )
    # Conditional update: a second delivery of the same task message counts once per send.
    Invitation.objects.filter(pk=invitation.pk).update(last_sent_at=timezone.now())
    return True


def resend_invitation(actor: Actor, invitation: Invitation) -> Invitation:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_INVITATIONS)
    _require_owner_rights_for(actor, invitation.role)
    return _resend_invitation(tenant, invitation, by=actor.user, ip=actor.ip)


def _resend_invitation(tenant: Tenant, invitation: Invitation, *, by: User, ip: str | None) -> Invitation:
    if invitation.status != InvitationStatus.PENDING:
        raise ServiceError("Only pending invitations can be resent.")
    with transaction.atomic():
        invitation.rotate_secret()  # the old link stops working
        invitation.expires_at = timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS)
        invitation.sent_count += 1
        invitation.save(update_fields=["nonce", "secret_hash", "expires_at", "sent_count"])
        audit.record("invitation.resent", actor=by, tenant=tenant, target=invitation, ip=ip)
        _enqueue_invitation_email(invitation)
    return invitation


def revoke_invitation(actor: Actor, invitation: Invitation) -> None:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.MANAGE_INVITATIONS)
    _require_owner_rights_for(actor, invitation.role)
    _revoke_invitation(tenant, invitation, by=actor.user, ip=actor.ip)


def _revoke_invitation(tenant: Tenant, invitation: Invitation, *, by: User, ip: str | None) -> None:
    with transaction.atomic():
        changed = Invitation.objects.filter(pk=invitation.pk, status=InvitationStatus.PENDING).update(
            status=InvitationStatus.REVOKED
        )
        if changed != 1:
            raise ServiceError("This invitation is no longer pending.")
        audit.record(
            "invitation.revoked",
            actor=by,
            tenant=tenant,
            target=invitation,
            before={"status": "pending"},
            after={"status": "revoked"},
            ip=ip,
        )


def find_invitation(token: str) -> Invitation | None:
    """The open-or-not invitation a link names, or None. Sets no context for the caller."""
    tenant_part, _, secret = (token or "").partition(".")
    # isascii(): str.isdigit() also accepts "²", which int() refuses.
    if not (tenant_part.isascii() and tenant_part.isdigit()) or not secret or len(secret) > 128:
        return None
    tenant = Tenant.objects.select_related("tier").filter(pk=int(tenant_part)).first()
    if tenant is None:
        return None
    with tenant_context(tenant):
        return (
            Invitation.objects.select_related("tenant", "invited_by")
            .filter(secret_hash=hash_invitation_secret(secret))
            .first()
        )


def accept_invitation(invitation: Invitation, user: User, ip: str | None = None) -> Membership:
    """Make `user` a member. The invitation is single use; the email must match."""
    tenant = invitation.tenant
    if user.email.lower() != invitation.email.lower():
        raise ServiceError(f"This invitation is for {invitation.email}; you are signed in as {user.email}.")
    if not tenant.is_active:
        raise ServiceError(f"{tenant.name} is suspended; the invitation cannot be accepted now.")
    with tenant_context(tenant, user_id=user.pk), transaction.atomic():
        if invitation.is_expired:
            raise ServiceError("This invitation has expired. Ask an admin to resend it.")
        # Conditional update: two clicks (or two tabs) accept it once.
        changed = Invitation.objects.filter(pk=invitation.pk, status=InvitationStatus.PENDING).update(
            status=InvitationStatus.ACCEPTED, accepted_by=user, accepted_at=timezone.now()
        )
        if changed != 1:
            raise ServiceError("This invitation has already been used or was revoked.")
        membership, created = Membership.objects.get_or_create(user=user, defaults={"role": invitation.role})
        record_proven_address(user, invitation.email)
        audit.record(
            "membership.created" if created else "invitation.accepted_existing_member",
            actor=user,
            tenant=tenant,
            target=membership,
            target_repr=user.email,
            after={"role": membership.role, "via": "invitation", "invitation": invitation.pk},
            ip=ip,
        )
    return membership


def record_proven_address(user: User, email: str) -> None:
    """Note that `user` proved they read mail sent to `email` (allauth's verified flag).

    The invitation link went to that mailbox only. Single sign-on links an IdP
    identity to an existing account only through such a proof (tenants/identity/sso.py).
    """
    from allauth.account.models import EmailAddress

    email = email.lower()
    try:
        with transaction.atomic():
            if not EmailAddress.objects.filter(user=user, email__iexact=email).update(verified=True):
                primary = not EmailAddress.objects.filter(user=user, primary=True).exists()
                EmailAddress.objects.create(user=user, email=email, verified=True, primary=primary)
    except IntegrityError:
        pass  # another account confirmed this address first: it keeps it, this one stays unproven


# --- members ------------------------------------------------------------------------


def _owner_count_locked() -> int:
    # Lock the owner rows so two concurrent demotions cannot both pass the check.
    return len(list(Membership.objects.select_for_update().filter(role=Role.OWNER).values_list("pk", flat=True)))


def change_role(actor: Actor, membership: Membership, role: str) -> Membership:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.CHANGE_ROLES)
    if role not in Role.values:
        raise ServiceError(f"Unknown role {role!r}.")
    if role == membership.role:
        return membership
    _require_owner_rights_for(actor, role, membership.role)
    with transaction.atomic():
        if membership.role == Role.OWNER and _owner_count_locked() <= 1:
            raise ServiceError("A tenant needs at least one owner. Make someone else owner first.")
        before = membership.role
        changed = Membership.objects.filter(pk=membership.pk, role=before).update(role=role)
        if changed != 1:
            raise ServiceError("This membership changed meanwhile; reload and try again.")
        membership.role = role
        audit.record(
            "membership.role_changed",
            actor=actor.user,
            tenant=tenant,
            target=membership,
            target_repr=membership.user.email,
            before={"role": before},
            after={"role": role},
            ip=actor.ip,
        )
        _record_api_clients_paused(actor, membership.user, before)
        _streams_recheck_access(tenant)
    return membership


def _streams_recheck_access(tenant: Tenant) -> None:
    """Once the change commits, open streams of the tenant's turns re-check their reader and
    stream tokens made before stop opening the fast path (agents.streaming.access_changed)."""
    from agents import streaming

    transaction.on_commit(lambda: streaming.access_changed(tenant.pk))


def _record_api_clients_paused(actor: Actor, user: User, role_before: str) -> None:
    # API clients act on their owner's rights (tenants/identity/models.py ApiClient).
    from tenants.identity.services import record_api_clients_paused

    record_api_clients_paused(actor, user, role_before)


def remove_member(actor: Actor, membership: Membership) -> None:
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.REMOVE_MEMBERS)
    _require_owner_rights_for(actor, membership.role)
    with transaction.atomic():
        if membership.role == Role.OWNER and _owner_count_locked() <= 1:
            raise ServiceError("The last owner cannot be removed.")
        email, role = membership.user.email, membership.role
        deleted, _ = Membership.objects.filter(pk=membership.pk).delete()
        if not deleted:
            raise ServiceError("This member was already removed.")
        audit.record(
            "membership.removed",
            actor=actor.user,
            tenant=tenant,
            target_repr=email,
            before={"email": email, "role": role},
            ip=actor.ip,
        )
        _record_api_clients_paused(actor, membership.user, role)
        _streams_recheck_access(tenant)
        # Their last tenant gone, they are signed out everywhere (tenants/sessions.py).
        end_sessions_of_users_left_without_a_tenant([membership.user_id])


AUDIT_EXPORT_FEATURE = "audit_export"  # the entitlement an export needs (tenants.entitlements.FEATURES)


def export_audit_log(actor: Actor, entries, *, filters: dict) -> audit.AuditExport:
    """Begin a CSV export of the audit log rows `entries` selects (the filters the person
    chose, as `filters`), and record it (audit.exported) before a row goes out: who took
    a copy of the log, of what, and how many rows, is what a compliance review asks.

    The export is pinned to the entries that exist now, so its file holds exactly the
    number of rows recorded, and not its own record."""
    tenant = _check_actor_tenant(actor)
    require(actor.role, Action.VIEW_AUDIT_LOG)
    if not entitlements.has_feature(tenant, AUDIT_EXPORT_FEATURE):
        raise PermissionDenied(f"Exporting the audit log is not part of the {tenant.tier.name} plan.")
    newest = AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
    selected = entries.filter(id__lte=newest)
    audit.record(
        audit.EXPORTED,
        actor=actor.user,
        tenant=tenant,
        target_repr="Audit log (CSV)",
        after={"format": "csv", "rows": selected.count(), "filters": filters},
        ip=actor.ip,
    )
    return audit.AuditExport(tenant=tenant, entries=selected, user_id=actor.user.pk)


# --- operator actions ---------------------------------------------------------------

OPERATOR_REASON = "operator console"


def _require_operator(user: User) -> None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        raise ServiceError("Only operators can do this.")


TENANT_FIELDS = ["slug", "name", "tier", "deployment_model", "region", "status", "resource_bindings"]


def _audited(tenant: Tenant) -> dict:
    """The tenant's fields as its audit entries record them: the tier by its name, which is
    what an operator reading the log knows it by (its database id says nothing)."""
    values = audit.snapshot(tenant, TENANT_FIELDS)
    values["tier"] = tenant.tier.name
    return values


def create_tenant(
    operator: User,
    *,
    slug: str,
    name: str,
    tier: Tier,
    deployment_model: str = DeploymentModel.POOL,
    region: str = "us-east-1",
    owner_email: str = "",
    ip: str | None = None,
) -> tuple[Tenant, Invitation | None]:
    """Onboard a tenant; its first owner gets an invitation."""
    _require_operator(operator)
    tenant = Tenant(slug=slug, name=name, tier=tier, deployment_model=deployment_model, region=region)
    try:
        tenant.full_clean()
    except ValidationError as exc:
        # e.g. a silo whose default queue (tenant-<slug>) another tenant has bound: a form error.
        raise ServiceError(exc.messages) from exc
    invitation = None
    with transaction.atomic():
        tenant.save()
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "tenant.created",
                actor=operator,
                tenant=tenant,
                target=tenant,
                after=_audited(tenant),
                ip=ip,
            )
        if owner_email:
            with tenant_context(tenant):
                invitation = _create_invitation(tenant, email=owner_email, role=Role.OWNER, by=operator, ip=ip)
        _redraft_running_month([tenant])
    return tenant, invitation


# The operator's hand on a tenant's owner invitations (the console's tenant page): a
# mistyped owner address must not leave a new tenant with no way in. The same verbs as
# the tenant's own admins use, with the operator check instead of a membership.


def _operator_invitation(invitation_id) -> Invitation:
    invitation = Invitation.objects.filter(pk=invitation_id).first()
    if invitation is None:
        raise ServiceError("No such invitation.")
    return invitation


def operator_resend_invitation(operator: User, tenant: Tenant, invitation_id: int, ip: str | None = None):
    _require_operator(operator)
    with tenant_context(tenant):
        return _resend_invitation(tenant, _operator_invitation(invitation_id), by=operator, ip=ip)


def operator_revoke_invitation(operator: User, tenant: Tenant, invitation_id: int, ip: str | None = None):
    _require_operator(operator)
    with tenant_context(tenant):
        invitation = _operator_invitation(invitation_id)
        _revoke_invitation(tenant, invitation, by=operator, ip=ip)
        return invitation


def operator_invite_owner(operator: User, tenant: Tenant, email: str, ip: str | None = None) -> Invitation:
    """Invite an owner for a tenant that has none yet (once it has one, its owners invite)."""
    _require_operator(operator)
    with tenant_context(tenant):
        if Membership.objects.filter(role=Role.OWNER).exists():
            raise ServiceError(f"{tenant.name} has an owner: its owners invite people now.")
        return _create_invitation(tenant, email=email, role=Role.OWNER, by=operator, ip=ip)


def _redraft_running_month(tenants) -> int:
    """The running month's draft invoices of `tenants` drawn again (or for the first time)
    after a change of plan, in the caller's transaction, so invoices and the operator's
    revenue agree at once (billing.invoices.redraft_running_month)."""
    from billing.invoices import redraft_running_month

    return redraft_running_month(tenants)


def _record_tier_change(tenant: Tenant, tier_before_id: int | None) -> None:
    """The durable tier period boundary (billing.models.TierChange), in the caller's
    transaction, which proration bills each part of the month by."""
    from billing.invoices import record_tier_change

    record_tier_change(tenant, tier_before_id)


class BudgetBelowPlan(ServiceError):
    """A tier change that would leave the tenant's monthly budget below what its budget form
    accepts (at least the new plan's monthly fee): refused unless the operator also raises the
    budget to `lowest`. Raised as the tier field's error, for the console's form."""

    def __init__(self, tenant: Tenant, shortfall):
        self.cap, self.lowest = shortfall.cap, shortfall.lowest
        if shortfall.this_months_fee:
            fee = f"this month's fee with the move to {tenant.tier.name} (${self.lowest:,.2f})"
        else:
            fee = f"the {tenant.tier.name} plan's monthly fee (${self.lowest:,.2f})"
        super().__init__(
            {
                "tier": (
                    f"{tenant.name}'s monthly budget cap (${self.cap:,.2f}) is below {fee}: the fee alone would "
                    "pass it and stop every turn, and the tenant's own budget form refuses such a cap. Raise "
                    "the cap with the move (below), or choose another tier."
                )
            }
        )


def update_tenant(
    operator: User, tenant: Tenant, ip: str | None = None, *, raise_budget_to: Decimal | None = None, **changes
) -> Tenant:
    """Change tier, deployment model, region, name or resource bindings.

    A tier change never leaves the tenant with a monthly budget its budget form would refuse
    (below the new plan's fee): it is refused (BudgetBelowPlan) unless `raise_budget_to` is
    exactly the lowest budget the move needs, which then becomes the budget, in the same
    transaction (an amount the operator saw before the fee changed is refused again)."""
    _require_operator(operator)
    allowed = {"name", "tier", "deployment_model", "region", "resource_bindings"}
    unknown = set(changes) - allowed
    if unknown:
        raise ServiceError(f"Cannot change {', '.join(sorted(unknown))} here.")
    # Compared by id (two tiers may share a name), recorded by name.
    before, shown_before = audit.snapshot(tenant, TENANT_FIELDS), _audited(tenant)
    queue_before = tenant.bindings.celery_queue
    tier_before_id = tenant.tier_id
    for field, value in changes.items():
        setattr(tenant, field, value)
    try:
        tenant.full_clean()
    except ValidationError as exc:
        # Shown to the operator (a form error, a problem document), never a 500.
        raise ServiceError(exc.messages) from exc
    after, shown_after = audit.snapshot(tenant, TENANT_FIELDS), _audited(tenant)
    if before == after:
        return tenant
    actions = {
        "tier": "tenant.tier_changed",
        "deployment_model": "tenant.deployment_model_changed",
    }
    changed_fields = [f for f in before if before[f] != after[f]]
    action = actions.get(changed_fields[0], "tenant.updated") if len(changed_fields) == 1 else "tenant.updated"
    with transaction.atomic():
        if "tier" in changed_fields:
            # The new plan read under lock (no change of its price commits meanwhile), then the
            # tenant row (the save), then its budget (budget_shortfall): the order every budget
            # check takes (save_tier, billing.limits.set_budget), so none of them deadlock.
            tenant.tier = Tier.objects.select_for_update(no_key=True).get(pk=tenant.tier_id)
        tenant.save(update_fields=[*changes.keys(), "updated_at"])
        with all_tenants(OPERATOR_REASON):
            audit.record(
                action,
                actor=operator,
                tenant=tenant,
                target=tenant,
                before={f: shown_before[f] for f in changed_fields},
                after={f: shown_after[f] for f in changed_fields},
                ip=ip,
            )
        if "tier" in changed_fields:
            _record_tier_change(tenant, tier_before_id)
            _keep_budget_within_plan(operator, tenant, raise_budget_to, ip)
            _redraft_running_month([tenant])
        queue = tenant.bindings.celery_queue
        if queue != queue_before:
            _requeue_turns(operator, tenant, queue_before, queue, ip)
    return tenant


def _keep_budget_within_plan(operator: User, tenant: Tenant, raise_to: Decimal | None, ip: str | None) -> None:
    """After the move is recorded (this month's fee includes it): the budget it leaves is one
    the tenant's budget form takes, or is raised to the lowest it takes when the operator said
    so for that very amount; else the whole change rolls back (billing.limits)."""
    from billing import limits

    shortfall = limits.budget_shortfall(tenant)
    if shortfall is None:
        return
    if raise_to is None or Decimal(raise_to) != shortfall.lowest:
        raise BudgetBelowPlan(tenant, shortfall)
    limits.raise_budget_for_plan(operator, tenant, shortfall.lowest, ip=ip)
    tenant.budget_raised_to = shortfall.lowest  # for the console's message


def _requeue_turns(operator: User, tenant: Tenant, old: str, new: str, ip: str | None) -> None:
    """The tenant's queue changed: its still-queued turns follow it (their tasks sit in
    the old queue, which may have no worker now), after commit, audited."""
    from agents.services import requeue_queued_turns

    moved = requeue_queued_turns(tenant, new)
    if moved:
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "tenant.turns_requeued",
                actor=operator,
                tenant=tenant,
                target=tenant,
                before={"queue": old},
                after={"queue": new, "turns": moved},
                ip=ip,
            )


def queue_warning(tenant: Tenant) -> str:
    """A warning for the operator when Celery can tell that no worker consumes the
    tenant's queue ("" when one does, or when that cannot be told)."""
    from agents.services import queue_has_worker

    queue = tenant.bindings.celery_queue
    if queue_has_worker(queue) is False:
        return (
            f"No worker consumes the queue {queue}: {tenant.name}'s turns will wait there until one does "
            f"(celery -A portal worker -Q {queue})."
        )
    return ""


def set_tenant_status(operator: User, tenant: Tenant, status: str, reason: str = "", ip: str | None = None):
    _require_operator(operator)
    if status not in TenantStatus.values:
        raise ServiceError(f"Unknown status {status!r}.")
    if status == TenantStatus.SUSPENDED and not reason.strip():
        raise ServiceError("Say why the tenant is suspended; its members will see it.")
    before = tenant.status
    with transaction.atomic():
        changed = (
            Tenant.objects.filter(pk=tenant.pk)
            .exclude(status=status)
            .update(
                status=status,
                suspended_reason=reason.strip() if status == TenantStatus.SUSPENDED else "",
                updated_at=timezone.now(),
            )
        )
        if changed != 1:
            raise ServiceError(f"{tenant.name} is already {status}.")
        tenant.refresh_from_db()
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "tenant.suspended" if status == TenantStatus.SUSPENDED else "tenant.reactivated",
                actor=operator,
                tenant=tenant,
                target=tenant,
                before={"status": before},
                after={"status": status, "reason": tenant.suspended_reason},
                ip=ip,
            )
        if status == TenantStatus.ACTIVE:
            # Active again: it owes the running month's plan fee, as the revenue table counts it.
            _redraft_running_month([tenant])
        if status == TenantStatus.SUSPENDED:
            # Its members' open streams end at their next re-check (it refuses a suspended
            # tenant), not at the quiet-stream status check, and their stream tokens stop
            # opening the fast path.
            _streams_recheck_access(tenant)
    return tenant


# What an invoice is priced from (billing.invoices.PlanTerms): a change re-prices the running month.
PLAN_TIER_FIELDS = ("name", "monthly_price", "included_tokens", "overage_price_per_1k_tokens")


def tier_tenants_billed(tier: Tier) -> list[Tenant]:
    """The tenants whose running month a change of `tier`'s prices re-prices."""
    from billing.invoices import tenants_billed_on

    return tenants_billed_on(tier)


TIER_FIELDS = [
    "slug",
    "name",
    "description",
    "monthly_price",
    "included_tokens",
    "overage_price_per_1k_tokens",
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_sessions",
    "allowed_models",
    "default_features",
    "celery_queue",
]


def _record_tier_terms(tier: Tier, stored: Tier | None) -> None:
    from billing.invoices import record_tier_terms

    record_tier_terms(tier, before=stored)


class BudgetsBelowTierFee(ServiceError):
    """A change of a tier's price that would leave tenants on it with a monthly budget their
    budget form refuses (below the new fee): refused unless the operator agreed to raise each
    of them to the lowest its budget form takes. `shortfalls`: (tenant, BudgetShortfall) by
    name; `agreement`: what to agree to, as the tier form carries it. Raised as the monthly
    price's error, for the console's form."""

    NAMED = 3  # tenants named in the message; the rest are counted

    def __init__(self, tier: Tier, shortfalls: list):
        self.shortfalls = shortfalls
        self.agreement = {tenant.pk: shortfall.lowest for tenant, shortfall in shortfalls}
        named = ", ".join(f"{tenant.name} (${shortfall.cap:,.2f})" for tenant, shortfall in shortfalls[: self.NAMED])
        rest = len(shortfalls) - self.NAMED
        if rest > 0:
            named += f" and {rest} more"
        count = len(shortfalls)
        super().__init__(
            {
                "monthly_price": (
                    f"{count} tenant{'s' if count != 1 else ''} on {tier.name} "
                    f"{'have' if count != 1 else 'has'} a monthly budget cap below the new fee of "
                    f"${spend_fee(tier):,.2f}: {named}. The fee alone would pass "
                    f"{'those caps' if count != 1 else 'that cap'} and stop every turn, and the tenants' own "
                    "budget form refuses such a cap. Raise the caps with the new price (below), or keep the price."
                )
            }
        )


def spend_fee(tier: Tier):
    from billing.spend import monthly_fee

    return monthly_fee(tier)


def _tenants_priced_by(tier: Tier) -> list[Tenant]:
    """The tenants whose budget a change of `tier`'s price bears on, locked (tenant rows, by
    pk): those on it, and those that moved to or from it this month (their month bills its
    days on it). Locked in the order every budget check takes: Tier, then Tenant, then
    TenantBudget (billing.limits.set_budget), so a tenant admin's budget edit waits for this
    change and judges against its fee, or this change judges against the budget it saved."""
    import datetime as dt

    from billing.accounting import month_start
    from billing.models import TierChange

    since = dt.datetime.combine(month_start(), dt.time.min, tzinfo=dt.UTC)
    with all_tenants(OPERATOR_REASON):
        moved = TierChange.unscoped.filter(effective_at__gte=since).filter(Q(tier_before=tier) | Q(tier_after=tier))
        ids = set(Tenant.objects.filter(tier=tier).values_list("pk", flat=True)) | set(
            moved.values_list("tenant_id", flat=True)
        )
    # NO KEY: rows that merely refer to a tenant (usage, messages) are still written meanwhile.
    locked = Tenant.objects.select_for_update(no_key=True, of=("self",)).select_related("tier")
    return list(locked.filter(pk__in=ids).order_by("pk"))


def _keep_budgets_within_tier_fee(
    operator: User, tier: Tier, raise_budgets: dict | None, ip: str | None
) -> list[tuple[Tenant, object]]:
    """After the tier's new terms are recorded (this month's fee includes them): each tenant it
    prices is left with a budget its budget form takes, or raised to the lowest it takes when
    the operator agreed to that very raise for that tenant; else the whole change rolls back.
    Returns the (tenant, shortfall) raised."""
    from billing import limits

    shortfalls = [(t, s) for t in _tenants_priced_by(tier) if (s := limits.budget_shortfall(t)) is not None]
    if not shortfalls:
        return []
    agreed = {int(pk): Decimal(amount) for pk, amount in (raise_budgets or {}).items()}
    if any(agreed.get(tenant.pk) != shortfall.lowest for tenant, shortfall in shortfalls):
        raise BudgetsBelowTierFee(tier, sorted(shortfalls, key=lambda pair: (pair[0].name, pair[0].pk)))
    for tenant, shortfall in shortfalls:
        limits.raise_budget_for_plan(operator, tenant, shortfall.lowest, ip=ip)
    return sorted(shortfalls, key=lambda pair: (pair[0].name, pair[0].pk))


def save_tier(operator: User, tier: Tier, ip: str | None = None, *, raise_budgets: dict | None = None) -> Tier:
    """Create or update a tier (the caller has set its fields, e.g. from a form).

    A price change never leaves a tenant it prices with a monthly budget its budget form would
    refuse (below the new fee): it is refused (BudgetsBelowTierFee) unless `raise_budgets`
    ({tenant pk: amount}) holds exactly the raise each such tenant needs, judged again here
    under lock; those budgets are then raised in the same transaction, each audited in its
    tenant's log (`tier.budgets_raised`: the (tenant, shortfall) pairs, for the message)."""
    _require_operator(operator)
    creating = tier.pk is None
    stored = None if creating else Tier.objects.get(pk=tier.pk)
    before = {} if creating else audit.snapshot(stored, TIER_FIELDS)
    try:
        tier.full_clean()
    except ValidationError as exc:
        # Shown to the operator by field (a form error, a problem document), never a 500.
        raise ServiceError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from exc
    tier.repriced_invoices = 0  # how many running-month drafts the save redrew (for the message)
    tier.budgets_raised = []
    with transaction.atomic():
        tier.save()
        after = audit.snapshot(tier, TIER_FIELDS)
        plan_changed = creating or any(
            getattr(stored, f) != getattr(tier, f) for f in PLAN_TIER_FIELDS + ("overage_allowed",)
        )
        if plan_changed:
            # Its terms from now on: the months already over stay billed at the terms then.
            _record_tier_terms(tier, stored)
        if not creating and stored.monthly_price != tier.monthly_price:
            tier.budgets_raised = _keep_budgets_within_tier_fee(operator, tier, raise_budgets, ip)
        if not creating and any(getattr(stored, f) != getattr(tier, f) for f in PLAN_TIER_FIELDS):
            # The running month is billed at the tier's terms now: its drafts are redrawn
            # here, so no invoice keeps the old price until the hourly redraft.
            tier.repriced_invoices = _redraft_running_month(tier_tenants_billed(tier))
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "tier.created" if creating else "tier.updated",
                actor=operator,
                target=tier,
                before={k: v for k, v in before.items() if after.get(k) != v},
                after={k: v for k, v in after.items() if before.get(k) != v},
                ip=ip,
            )
    return tier
