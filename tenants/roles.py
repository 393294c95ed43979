"""Roles as a declared table: role → the actions it may take.

Services call `require(membership, action)`; views and API permissions read
the same table, and tests/tenants/test_roles.py walks it as a matrix.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    BILLING = "billing", "Billing"


class Action:
    VIEW_TENANT = "tenant.view"  # see the tenant's home, tier, limits, entitlements
    USE_AGENTS = "agents.use"  # chat with the tenant's agents
    VIEW_MEMBERS = "members.view"
    INVITE_MEMBERS = "members.invite"
    CHANGE_ROLES = "members.change_role"
    REMOVE_MEMBERS = "members.remove"
    MANAGE_OWNERS = "members.manage_owners"  # grant, change or remove the owner role
    MANAGE_INVITATIONS = "invitations.manage"  # resend, revoke
    VIEW_AUDIT_LOG = "audit.view"
    VIEW_BILLING = "billing.view"
    MANAGE_API_CLIENTS = "api_clients.manage"  # create and revoke machine clients
    MANAGE_AGENTS = "agents.manage"  # which agents may act here; rotate tenant-owned agent secrets
    MANAGE_SSO = "sso.manage"  # the tenant's single sign-on settings: domains, policy, secret rotation
    # Which identity provider signs the tenant's people in (set up the connection, change its
    # issuer or client id): whoever chooses it can sign in as anyone of the claimed domains,
    # owners included, so it is an owner's decision like granting the owner role.
    MANAGE_SSO_PROVIDER = "sso.manage_provider"
    MANAGE_SECURITY = "security.manage"  # sign-in policy: whether members must use two-factor authentication
    VIEW_GUARDRAILS = "guardrails.view"  # the effective guardrail policy and its trigger metrics
    MANAGE_GUARDRAILS = "guardrails.manage"  # edit the tenant's guardrail overrides, mark false positives
    MANAGE_KNOWLEDGE = "knowledge.manage"  # knowledge bases: create, upload documents, delete, choose per agent
    MANAGE_LIMITS = "billing.limits"  # the monthly budget, its soft alert and per-person limits


_ADMIN_ACTIONS = frozenset(
    {
        Action.VIEW_TENANT,
        Action.USE_AGENTS,
        Action.VIEW_MEMBERS,
        Action.INVITE_MEMBERS,
        Action.CHANGE_ROLES,
        Action.REMOVE_MEMBERS,
        Action.MANAGE_INVITATIONS,
        Action.VIEW_AUDIT_LOG,
        Action.VIEW_BILLING,
        Action.MANAGE_API_CLIENTS,
        Action.MANAGE_AGENTS,
        Action.MANAGE_SSO,
        Action.MANAGE_SECURITY,
        Action.VIEW_GUARDRAILS,
        Action.MANAGE_GUARDRAILS,
        Action.MANAGE_KNOWLEDGE,
        Action.MANAGE_LIMITS,
    }
)

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.OWNER: _ADMIN_ACTIONS | {Action.MANAGE_OWNERS, Action.MANAGE_SSO_PROVIDER},
    Role.ADMIN: _ADMIN_ACTIONS,
    Role.BILLING: frozenset({Action.VIEW_TENANT, Action.VIEW_BILLING}),
    Role.MEMBER: frozenset({Action.VIEW_TENANT, Action.USE_AGENTS}),
}

ALL_ACTIONS = frozenset().union(*ROLE_ACTIONS.values())


def can(role: str | None, action: str) -> bool:
    if action not in ALL_ACTIONS:
        raise ValueError(f"Unknown action {action!r}")
    return role is not None and action in ROLE_ACTIONS.get(role, frozenset())


def require(role: str | None, action: str) -> None:
    if not can(role, action):
        raise PermissionDenied(f"Your role does not allow {action}.")
