"""Who may read and write which memory namespace: the access policy, in one place.

Namespaces are paths (see models.py):

* ``/tenant/<t>/user/<u>/agent/<slug>``  member <u>'s facts for one agent;
* ``/tenant/<t>/user/<u>``               member <u>'s facts for all of tenant <t>'s agents;
* ``/tenant/<t>/shared``                 tenant <t>'s facts for all its agents and members.

The rules:

* a member's namespaces are readable and writable only on that member's behalf
  (the act-on-behalf token's ``sub``, or the signed-in member on the Memory page)
  and only within the tenant the namespace names;
* the tenant-shared namespace is readable on behalf of every member of the tenant
  (so by all the tenant's agents) and writable only on behalf of an owner or admin.

Nothing else decides: the gateway (services.recall_for_token / remember_for_token)
and the Memory page ask `can_read` / `can_write`, and `readable_namespaces` lists
what a recall searches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tenants.roles import Role

WRITERS_OF_SHARED = frozenset({Role.OWNER, Role.ADMIN})
_NAMESPACE_RE = re.compile(r"\A/tenant/(\d+)(?:/shared|/user/(\d+)(?:/agent/([-a-zA-Z0-9_]+))?)\Z")


class Scope:
    AGENT = "agent"  # the member's facts for one agent (the default)
    USER = "user"  # the member's facts for all the tenant's agents
    SHARED = "shared"  # the tenant's facts

    CHOICES = (AGENT, USER, SHARED)


@dataclass(frozen=True)
class Namespace:
    tenant_id: int
    user_id: int | None = None  # None: the tenant-shared namespace
    agent_slug: str = ""

    @property
    def shared(self) -> bool:
        return self.user_id is None

    @property
    def path(self) -> str:
        if self.shared:
            return f"/tenant/{self.tenant_id}/shared"
        if self.agent_slug:
            return f"/tenant/{self.tenant_id}/user/{self.user_id}/agent/{self.agent_slug}"
        return f"/tenant/{self.tenant_id}/user/{self.user_id}"

    def __str__(self) -> str:
        return self.path


def parse(path: str) -> Namespace | None:
    """The namespace a path names, or None when it is not one of the three shapes."""
    match = _NAMESPACE_RE.match(path or "")
    if match is None:
        return None
    tenant_id, user_id, agent_slug = match.groups()
    return Namespace(int(tenant_id), int(user_id) if user_id else None, agent_slug or "")


def namespace_for(scope: str, *, tenant_id: int, user_id: int, agent_slug: str) -> Namespace:
    if scope == Scope.SHARED:
        return Namespace(tenant_id)
    if scope == Scope.USER:
        return Namespace(tenant_id, user_id)
    if scope == Scope.AGENT and agent_slug:
        return Namespace(tenant_id, user_id, agent_slug)
    raise ValueError(f"unknown memory scope {scope!r}")


def can_read(namespace: Namespace, *, tenant_id: int, user_id: int | None) -> bool:
    """Whether `namespace` may be read on behalf of member `user_id` of tenant `tenant_id`."""
    if user_id is None or namespace.tenant_id != tenant_id:
        return False
    return namespace.shared or namespace.user_id == user_id


def can_write(namespace: Namespace, *, tenant_id: int, user_id: int | None, role: str | None) -> bool:
    """Whether `namespace` may be written on behalf of member `user_id` (with `role`) of tenant `tenant_id`."""
    if user_id is None or role is None or namespace.tenant_id != tenant_id:
        return False
    if namespace.shared:
        return role in WRITERS_OF_SHARED
    return namespace.user_id == user_id


def can_administer(role: str | None) -> bool:
    """Whether a member with `role` may see per-member counts and clear a member's memory
    (never read its contents: the page shows counts only)."""
    return role in WRITERS_OF_SHARED


def readable_namespaces(*, tenant_id: int, user_id: int, agent_slug: str) -> list[Namespace]:
    """What a recall for member `user_id` talking to agent `agent_slug` searches, most specific first."""
    spaces = [Namespace(tenant_id, user_id, agent_slug)] if agent_slug else []
    return [*spaces, Namespace(tenant_id, user_id), Namespace(tenant_id)]
