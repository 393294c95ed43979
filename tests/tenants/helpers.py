"""Small helpers for the tenancy tests: acting as someone, reading the audit log."""

from __future__ import annotations

from tenants import services
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, Invitation, Membership, Tenant
from tests.factories import Side

IP = "203.0.113.7"


def page_text(response) -> str:
    """A page's HTML without the line-break hints (<wbr>) that portal_format.breakable puts
    into addresses and codes, so that one is found as typed, and a check that it is NOT on
    the page cannot pass just because a hint split it."""
    return response.content.decode().replace("<wbr>", "")


def actor(side: Side, role: str, ip: str | None = IP) -> services.Actor:
    """The user of `side` who holds `role`, acting through their membership."""
    return services.Actor(user=side.user(role), membership=side.memberships[role], ip=ip)


def audit_entries(tenant: Tenant, action: str) -> list[AuditLog]:
    with tenant_context(tenant):
        return list(AuditLog.objects.filter(action=action).order_by("id"))


def platform_audit_entries(action: str) -> list[AuditLog]:
    """Every tenant's audit rows and the platform's own (tenant empty), for one action."""
    with all_tenants("test: read the whole audit log"):
        return list(AuditLog.unscoped.filter(action=action).order_by("id"))


def member_roles(tenant: Tenant) -> dict[str, str]:
    """email → role of every member of `tenant`."""
    with tenant_context(tenant):
        return dict(Membership.objects.values_list("user__email", "role"))


def invitations(tenant: Tenant) -> list[Invitation]:
    with tenant_context(tenant):
        return list(Invitation.objects.order_by("id"))


def reload(obj):
    """A fresh copy of a tenant-owned row, read in its tenant's context."""
    with tenant_context(Tenant.objects.get(pk=obj.tenant_id)):
        return type(obj).objects.get(pk=obj.pk)
