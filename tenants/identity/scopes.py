"""OAuth scopes, derived from the role table so the two can never disagree.

A user's token carries the scopes of their role in the tenant; an API client's
scopes are a subset of its creator's; an exchanged token's are a subset of its
subject's.
"""

from __future__ import annotations

from collections.abc import Iterable

from tenants.roles import ROLE_ACTIONS, Action

ACTION_SCOPES: dict[str, str] = {
    Action.VIEW_TENANT: "tenant:read",
    Action.USE_AGENTS: "agents:invoke",
    Action.VIEW_MEMBERS: "members:read",
    Action.INVITE_MEMBERS: "members:write",
    Action.CHANGE_ROLES: "members:write",
    Action.REMOVE_MEMBERS: "members:write",
    Action.MANAGE_OWNERS: "members:owners",
    Action.MANAGE_INVITATIONS: "members:write",
    Action.VIEW_AUDIT_LOG: "audit:read",
    Action.VIEW_BILLING: "billing:read",
    Action.MANAGE_API_CLIENTS: "clients:write",
    Action.MANAGE_AGENTS: "agents:manage",
    Action.MANAGE_SSO: "sso:write",
    Action.MANAGE_SSO_PROVIDER: "sso:write",
    # Who may get in is part of managing members; no scope of its own.
    Action.MANAGE_SECURITY: "members:write",
    Action.VIEW_GUARDRAILS: "guardrails:read",
    Action.MANAGE_GUARDRAILS: "guardrails:write",
    Action.MANAGE_KNOWLEDGE: "kb:write",
    Action.MANAGE_LIMITS: "billing:write",
}

# Scopes that come with an action: using agents means the agent may read the
# tenant's knowledge bases, and run the tools the tenant enabled for it, on the user's behalf.
IMPLIED_SCOPES: dict[str, set[str]] = {Action.USE_AGENTS: {"kb:read", "tools:invoke"}}
# ... and keep and recall the member's own long-term memories (agents/memory/policy.py
# decides which namespaces; the exchanged token carries these only on entitled tenants).
MEMORY_SCOPES = frozenset({"memory:read", "memory:write"})
IMPLIED_SCOPES[Action.USE_AGENTS] |= MEMORY_SCOPES

# What an API client (client_credentials: no person behind it) may do: read. Every change
# goes through a service that checks a person's role, and chat is always on behalf of a
# member (agents act for users, never for a machine; ARCHITECTURE.md §4), so a client
# token holding any other scope could use none of it. The API clients page offers only
# these scopes, and TenantScopedAPIMixin lets a client take only these actions.
CLIENT_ACTIONS = frozenset(
    {Action.VIEW_TENANT, Action.VIEW_MEMBERS, Action.VIEW_AUDIT_LOG, Action.VIEW_BILLING, Action.VIEW_GUARDRAILS}
)
CLIENT_SCOPES = frozenset(ACTION_SCOPES[action] for action in CLIENT_ACTIONS)

SCOPES: dict[str, str] = {
    "tenant:read": "Read the tenant, its tier, limits and entitlements",
    "agents:invoke": "Chat with the tenant's agents",
    "kb:read": "Retrieve from the tenant's knowledge bases",
    "tools:invoke": "Run the tools the tenant enabled for an agent",
    "memory:read": "Recall the member's long-term memories (agents acting for them)",
    "memory:write": "Store facts in the member's long-term memory (agents acting for them)",
    "kb:write": "Create knowledge bases, upload and delete documents",
    "members:read": "List members and invitations",
    "members:write": "Invite, change roles of and remove members",
    "members:owners": "Grant or remove the owner role",
    "audit:read": "Read the tenant's audit log",
    "billing:read": "Read usage, cost and invoices",
    "billing:write": "Set the monthly budget and per-person limits",
    "clients:write": "Create and revoke API clients",
    "agents:manage": "Choose which agents act in the tenant; rotate agent credentials",
    "sso:write": "Configure the tenant's single sign-on",
    "guardrails:read": "Read the guardrail policy and its trigger events",
    "guardrails:write": "Change the tenant's guardrail policy; mark false positives",
}


def scopes_for_role(role: str | None) -> frozenset[str]:
    scopes: set[str] = set()
    for action in ROLE_ACTIONS.get(role, frozenset()):
        scopes.add(ACTION_SCOPES[action])
        scopes |= IMPLIED_SCOPES.get(action, set())
    return frozenset(scopes)


def parse(scope: str | Iterable[str] | None) -> frozenset[str]:
    if scope is None:
        return frozenset()
    if isinstance(scope, str):
        return frozenset(s for s in scope.split(" ") if s)
    return frozenset(scope)


def format_scope(scopes: Iterable[str]) -> str:
    return " ".join(sorted(scopes))


def unknown(scopes: Iterable[str]) -> set[str]:
    return {s for s in scopes if s not in SCOPES}
