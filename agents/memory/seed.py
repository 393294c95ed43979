"""Demo memories: a few facts the demo members of tenants with the memory feature asked
the helpdesk agent to remember (idempotent). Only tenants whose memories live in the
portal's table (the `local` store): a silo tenant with a bound memory id keeps its
memories in its own AgentCore Memory, which the seed does not write to — except on
embedded defaults (AGENT_RUNTIME=local), where that binding is not used and Initech's
members get their facts in the portal's table like Globex's."""

from __future__ import annotations

from agents.memory import policy, services, stores
from agents.memory.models import MemoryRecord
from agents.models import Agent
from tenants.context import tenant_context
from tenants.models import Membership, Tenant

FACTS = {
    "member1": [
        ("helpdesk", "My name is Sam and I look after the Lisbon office printers."),
        ("helpdesk", "I prefer answers with numbered steps."),
        ("", "I work Monday to Thursday."),
    ],
    "member2": [("helpdesk", "My laptop is a ThinkPad X1 Carbon, asset tag GX-2291.")],
}


def seed_memory() -> int:
    created = 0
    for tenant in Tenant.objects.select_related("tier").order_by("slug"):
        if not services.entitled(tenant) or not isinstance(stores.store_for(tenant), stores.LocalStore):
            continue
        with tenant_context(tenant):
            agents = {a.slug: a for a in Agent.objects.filter(slug__in={"helpdesk"})}
            for membership in Membership.objects.select_related("user"):
                for agent_slug, content in FACTS.get(membership.user.email.partition("@")[0], []):
                    agent = agents.get(agent_slug)
                    if agent_slug and agent is None:
                        continue
                    scope = policy.Scope.AGENT if agent_slug else policy.Scope.USER
                    namespace = policy.namespace_for(
                        scope, tenant_id=tenant.pk, user_id=membership.user_id, agent_slug=agent_slug
                    )
                    _, new = MemoryRecord.objects.get_or_create(
                        namespace=namespace.path,
                        content=content,
                        defaults={"user_id": membership.user_id, "agent": agent if agent_slug else None},
                    )
                    created += new
    return created
