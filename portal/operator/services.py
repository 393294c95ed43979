"""Operator-console actions that tenants/services.py does not (yet) offer: the audit of
operators' reads across tenants, and feature grants and revocations.

ARCHITECTURE.md §3: cross-tenant reads happen only here and in billing roll-ups, "and
are audited". A read is recorded as `operator.viewed`:

* a page of ONE tenant's data (its settings and members, its billing, one invoice) goes
  into that tenant's audit log, so its admins see when the provider's staff looked;
* a page across tenants (guardrail activity, margins, invoices, the audit log) goes
  into the platform log, which only operators see.

Not recorded: the platform's own records of its customers, the Tenant and Tier rows
(PlatformModel) that operators create and edit: the tenants and tiers lists, as the
Django admin's Tenant and Tier pages (tenants/admin.py audits only its lists of
tenant-owned rows). The tenants list's member counts are a figure of that kind, not who
the members are; opening a tenant's page, which names them, is recorded.

One entry per operator, tenant and page per READ_WINDOW: a page reloaded, sorted or
paged through is one visit, not a flood that buries the changes in the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from tenants import audit, entitlements
from tenants.context import all_tenants
from tenants.models import AuditLog, Membership, Tenant, User
from tenants.services import OPERATOR_REASON, ServiceError

READ_ACTION = "operator.viewed"
READ_WINDOW = timedelta(minutes=10)

# page → what the operator saw, in words a tenant admin reading their log understands.
PAGES = {
    "tenant_detail": "Operator console: settings, members, invitations, API clients and audit log",
    "tenant_billing": "Operator console: usage, cost and invoices",
    "invoice": "Operator console: an invoice",
    "invoice_export": "Operator console: an invoice download",
    "guardrails": "Operator console: every tenant's guardrail activity",
    "billing": "Operator console: every tenant's revenue, cost and margin",
    "invoices": "Operator console: every tenant's invoices",
    "load": "Operator console: every tenant's load on the shared capacity",
    "audit_log": "Operator console: the audit log of every tenant",
    "agent_identities": "Operator console: every tenant's agent identities",
    "django_admin": "Django admin: every tenant's members, invitations or audit log",
}


def record_read(operator: User, page: str, *, tenant: Tenant | None = None, ip: str | None = None) -> AuditLog | None:
    """Audit that `operator` read `page` (of `tenant`, or across tenants); None when already
    recorded within READ_WINDOW."""
    description = PAGES[page]
    with all_tenants(OPERATOR_REASON):
        recent = AuditLog.unscoped.filter(
            action=READ_ACTION,
            actor=operator,
            tenant=tenant,
            target_repr=description,
            created_at__gte=timezone.now() - READ_WINDOW,
        )
        if recent.exists():
            return None
        return audit.record(
            READ_ACTION,
            actor=operator,
            tenant=tenant,
            target=tenant,
            target_repr=description,
            after={"page": page},
            ip=ip,
        )


def export_audit_log(operator: User, entries, *, filters: dict, ip: str | None = None) -> audit.AuditExport:
    """Begin a CSV export of the audit log rows `entries` selects across every tenant (the
    filters the operator chose, as `filters`), and record it (audit.exported) in the platform's
    log before a row goes out, as a tenant's export is recorded in its own.

    Pinned to the entries that exist now, so the file holds exactly the rows recorded, and
    not its own record."""
    if not (operator.is_authenticated and operator.is_active and operator.is_staff):
        raise ServiceError("Only operators can do this.")
    with all_tenants(OPERATOR_REASON):
        newest = AuditLog.unscoped.order_by("-id").values_list("id", flat=True).first() or 0
        selected = entries.filter(id__lte=newest)
        audit.record(
            audit.EXPORTED,
            actor=operator,
            target_repr="Audit log of every tenant and the platform (CSV)",
            after={"format": "csv", "rows": selected.count(), "filters": filters},
            ip=ip,
        )
    return audit.AuditExport(tenant=None, entries=selected, user_id=operator.pk, reason=OPERATOR_REASON)


def set_features(
    operator: User, tenant: Tenant, *, grants: list[str], revocations: list[str], ip: str | None = None
) -> Tenant:
    """Grant features beyond the tenant's tier and revoke ones it includes (audited).

    What was the Django admin's alone, now read-only so that no edit escapes the audit."""
    if not (operator.is_authenticated and operator.is_active and operator.is_staff):
        raise ServiceError("Only operators can do this.")
    grants, revocations = sorted(set(grants)), sorted(set(revocations))
    unknown = entitlements.unknown_features(grants) | entitlements.unknown_features(revocations)
    if unknown:
        raise ServiceError(f"Unknown features: {', '.join(sorted(unknown))}.")
    both = set(grants) & set(revocations)
    if both:
        raise ServiceError(f"Grant or revoke, not both: {', '.join(sorted(both))}.")
    before = {"feature_grants": tenant.feature_grants or [], "feature_revocations": tenant.feature_revocations or []}
    after = {"feature_grants": grants, "feature_revocations": revocations}
    changed = [key for key in before if sorted(before[key]) != after[key]]
    if not changed:
        return tenant
    with transaction.atomic():
        tenant.feature_grants, tenant.feature_revocations = grants, revocations
        tenant.save(update_fields=["feature_grants", "feature_revocations", "updated_at"])
        with all_tenants(OPERATOR_REASON):
            audit.record(
                "tenant.features_changed",
                actor=operator,
                tenant=tenant,
                target=tenant,
                before={key: before[key] for key in changed},
                after={key: after[key] for key in changed},
                ip=ip,
            )
    return tenant


# --- accounts changed in the Django admin ------------------------------------------------------

ACCOUNT_CHANGED = "user.changed_by_operator"
# What an operator may change on an account in the Django admin and the audit shows. Never
# the password: its hash is not something to copy into a log anybody reads.
ACCOUNT_FIELDS = ("email", "full_name", "is_active", "is_staff", "is_superuser", "groups", "user_permissions")


def address_taken_by_another_account(user: User | None, email: str) -> bool:
    """Has an account other than `user` proven `email` (a verified allauth address)? Then it
    cannot become `user`'s: the address finds that account for password resets and SSO."""
    from allauth.account.models import EmailAddress

    others = EmailAddress.objects.filter(email__iexact=email, verified=True)
    if user is not None and user.pk is not None:
        others = others.exclude(user_id=user.pk)
    return others.exists()


def replace_email_addresses(user: User, email: str) -> None:
    """Make `email` the only address allauth knows for `user`: verified and primary.

    allauth looks accounts up by its EmailAddress rows, not by User.email: an old row left
    behind would still reset this account's password and link a sign-in through the old
    domain's IdP to it (tenants/identity/sso.py, accounts_with_email). The new address
    counts as verified because the operator who typed it vouches for it, as an invitation
    link does for an invitee's (tenants.services.record_proven_address)."""
    from allauth.account.models import EmailAddress

    email = email.strip().lower()
    if address_taken_by_another_account(user, email):
        raise ServiceError(f"Another account has proven {email}.")
    with transaction.atomic():
        EmailAddress.objects.filter(user=user).exclude(email__iexact=email).delete()
        address = EmailAddress.objects.add_email(None, user, email)
        if not address.set_verified():
            raise ServiceError(f"Another account has proven {email}.")
        if not address.primary:
            address.primary = True
            address.save(update_fields=["primary"])


def remove_sso_links(user: User) -> list[tuple[str, str]]:
    """Remove every SSO link (allauth SocialAccount) of `user`; (provider, uid) of each, sorted.

    A link is the IdP identity of the person who held the account's address: after an
    operator gives the account to another address, that person would still sign in to it.
    The new address is linked anew at its first SSO sign-in, by the checks any first
    sign-in gets (tenants/identity/sso.py)."""
    from allauth.socialaccount.models import SocialAccount

    links = SocialAccount.objects.filter(user=user)
    removed = sorted(links.values_list("provider", "uid"))
    links.delete()  # their tokens with them
    return removed


def _links_for_the_log(tenant: Tenant | None, links: list[tuple[str, str]]) -> list[dict]:
    """The removed links a log may show. The platform's (operators only) names each IdP
    subject, so support can tell whose identity went. A tenant's shows only the links to its
    own IdP, by the keyed stand-in sso.account_linked used: the subject would tell its admins
    what to assert to sign in as someone, and another tenant's provider is not its business."""
    if tenant is None:
        return [{"provider": provider, "uid": uid} for provider, uid in links]
    from tenants.identity import sso

    connection = sso.connection_of(tenant)
    if connection is None:
        return []
    return [
        {"provider": provider, "subject_fingerprint": sso.subject_fingerprint(connection, uid)}
        for provider, uid in links
        if provider == connection.provider_id
    ]


def record_account_change(
    operator: User,
    user: User,
    *,
    before: dict,
    after: dict,
    created: bool = False,
    sso_links_removed: Sequence[tuple[str, str]] = (),
    ip: str | None = None,
) -> list[AuditLog]:
    """Audit an operator's change to `user`'s account (`before`/`after`: the fields that
    changed; `sso_links_removed`: (provider, uid) of the SSO links the change removed) in the
    platform's log and in the log of every tenant `user` is a member of: their admins see when
    the provider's staff changed one of their people."""
    if not before and not after and not sso_links_removed:
        return []
    if created:
        after = {**after, "created": True}
    with all_tenants(OPERATOR_REASON):
        tenants = [None, *Tenant.objects.filter(pk__in=Membership.unscoped.filter(user=user).values("tenant_id"))]
        entries = []
        for tenant in tenants:
            links = _links_for_the_log(tenant, list(sso_links_removed))
            entry_after = {**after, "sso_links_removed": links} if links else after
            entries.append(
                audit.record(
                    ACCOUNT_CHANGED, actor=operator, tenant=tenant, target=user, before=before, after=entry_after, ip=ip
                )
            )
        return entries


GROUP_CHANGED = "group.changed_by_operator"


def record_group_change(operator: User, group, *, before: dict, after: dict, ip: str | None = None) -> AuditLog | None:
    """Audit an operator's change to a permission group (the Django admin's) in the platform's log."""
    if not before and not after:
        return None
    with all_tenants(OPERATOR_REASON):
        return audit.record(GROUP_CHANGED, actor=operator, target=group, before=before, after=after, ip=ip)
