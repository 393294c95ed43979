"""Demo registry: every seeded agent's fields as its approved version 1, and one review
waiting (Initech's TPS report assistant, version 2, written by its admin, for its owner
to approve). Idempotent: an agent that has versions is left alone."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.models import Agent
from agents.registry.models import AgentVersion, VersionState
from tenants.context import all_tenants

OPERATOR_EMAIL = "operator@portal.example"
PENDING_AGENT = ("initech", "tps-reports")
PENDING_INSTRUCTIONS = (
    "Always remind people about the new cover sheets.\n"
    "Answer in at most five sentences and link the TPS report template when you mention it."
)


def seed_versions() -> int:
    User = get_user_model()
    operator = User.objects.filter(email=OPERATOR_EMAIL).first()
    created = 0
    now = timezone.now()
    with all_tenants("demo seed: agent registry"):
        for agent in Agent.unscoped.select_related("owner_tenant").order_by("pk"):
            if AgentVersion.unscoped.filter(agent=agent).exists():
                continue
            slug = agent.owner_tenant.slug if agent.owner_tenant_id else None
            author = reviewer = operator
            if slug is not None:
                author = User.objects.filter(email=f"admin@{slug}.example").first() or operator
                reviewer = User.objects.filter(email=f"owner@{slug}.example").first() or operator
            AgentVersion.unscoped.create(
                agent=agent,
                owner_tenant_id=agent.owner_tenant_id,
                number=1,
                name=agent.name,
                description=agent.description,
                instructions=agent.instructions or "You are a helpful assistant.",
                model=agent.model,
                offered_to_tiers=agent.offered_to_tiers,
                change_note="First version",
                author=author,
                author_email=getattr(author, "email", ""),
                state=VersionState.APPROVED,
                submitted_at=now,
                reviewed_by=reviewer,
                reviewed_by_email=getattr(reviewer, "email", ""),
                reviewed_at=now,
            )
            Agent.unscoped.filter(pk=agent.pk).update(published_version=1)
            created += 1
            if (slug, agent.slug) == PENDING_AGENT:
                AgentVersion.unscoped.create(
                    agent=agent,
                    owner_tenant_id=agent.owner_tenant_id,
                    number=2,
                    name=agent.name,
                    description=agent.description,
                    instructions=PENDING_INSTRUCTIONS,
                    model=agent.model,
                    change_note="Shorter answers; point to the template",
                    author=author,
                    author_email=getattr(author, "email", ""),
                    state=VersionState.SUBMITTED,
                    submitted_at=now,
                )
                created += 1
    return created
