"""Registry test data: the chat catalogue of tests/agents plus agents of a tenant's own."""

from __future__ import annotations

from agents.registry import services
from tenants.context import all_tenants, tenant_context
from tenants.models import Membership
from tenants.services import Actor

INSTRUCTIONS = "You answer questions about refunds."


def actor(side, role: str) -> Actor:
    user = side.user(role)
    with tenant_context(side.tenant):
        membership = Membership.objects.get(user=user)
    return Actor(user=user, membership=membership)


def draft(**overrides) -> services.Draft:
    fields = {"name": "Refund helper", "instructions": INSTRUCTIONS, "model_key": "offline-small"}
    fields.update(overrides)
    return services.Draft(**fields)


def own_agent(side, role: str = "admin", **overrides):
    """A new agent of `side`'s own, drafted (version 1) by its `role`."""
    who = actor(side, role)
    with tenant_context(side.tenant):
        return services.create_agent(who.user, draft(**overrides), actor=who, tenant=side.tenant)


def in_tenant(side, fn):
    with tenant_context(side.tenant):
        return fn()


def as_operator(fn):
    with all_tenants("test: operator console"):
        return fn()
