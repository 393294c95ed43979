"""Chat test data: a model, agents with workload identities, grants, and a fake runtime.

The fake replaces the runtime at its one seam, `agents.runtime_gateway.invoke` (a
generator taking (tenant, invocation)), so a turn runs the real claim → relay →
finish path with events the test chooses.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import Decimal

from agents.models import Agent, AgentStatus, Conversation, Invocation, Message, MessageStatus, ModelOffering, Provider
from tenants.context import all_tenants, tenant_context
from tenants.identity.models import AgentGrant, AgentIdentity
from tenants.models import Tenant

ANSWER = ["The refund window ", "is **30 days** [1]."]


@dataclass
class Catalogue:
    offering: ModelOffering
    helpdesk: Agent  # offered to the tier and enabled in tenant A (and B)
    not_enabled: Agent  # offered to the tier but no tenant allowed it


def _identity(name: str) -> AgentIdentity:
    return AgentIdentity.objects.create(
        name=name,
        client_id=f"agt_{secrets.token_hex(8)}",
        secret_hash="x" * 64,
        allowed_scopes=["agents:invoke", "kb:read"],
    )


def make_catalogue(*tenants: Tenant) -> Catalogue:
    """One offline model and two shared agents; the helpdesk is enabled in `tenants`."""
    tiers = {t.tier.pk: t.tier for t in tenants}
    with all_tenants("test: the shared catalogue"):
        offering = ModelOffering.unscoped.create(
            key="offline-small",
            name="Offline model",
            provider=Provider.OFFLINE,
            model_id="offline-small",
            price_per_1k_input=Decimal("0.001000"),
            price_per_1k_output=Decimal("0.002000"),
        )
        agents = {}
        for slug, name in (("helpdesk", "Helpdesk"), ("hidden", "Not enabled")):
            agents[slug] = Agent.unscoped.create(
                slug=slug,
                name=name,
                description=f"{name} agent",
                model=offering,
                offered_to_tiers=[tier.slug for tier in tiers.values()],
                status=AgentStatus.PUBLISHED,
                identity=_identity(name),
            )
    for tier in tiers.values():
        tier.allowed_models = [offering.key]
        tier.save(update_fields=["allowed_models"])
    for tenant in tenants:
        tenant.tier.refresh_from_db()
        with tenant_context(tenant):
            AgentGrant.objects.create(agent=agents["helpdesk"].identity)
    return Catalogue(offering=offering, helpdesk=agents["helpdesk"], not_enabled=agents["hidden"])


def make_turn(tenant: Tenant, user, agent: Agent, question: str = "Question?", answer: str = "Answer.", **extra):
    """A finished turn written directly (no task): conversation, both messages, the invocation."""
    status = extra.pop("status", MessageStatus.DONE)
    with tenant_context(tenant):
        conversation = extra.pop("conversation", None) or Conversation.objects.create(
            user=user, agent=agent, title=extra.pop("title", question[:80])
        )
        asked = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
        answered = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content=answer,
            status=status,
            model_label="Offline model",
            error=extra.pop("error", ""),
        )
        invocation = Invocation.objects.create(
            conversation=conversation,
            user=user,
            agent=agent,
            user_message=asked,
            assistant_message=answered,
            status=status,
            model_key="offline-small",
        )
    return conversation, answered, invocation


@dataclass
class FakeRuntime:
    """Stands in for runtime_gateway.invoke. `events` are yielded in order; an
    exception instance among them is raised at that point, and a function is
    called when the worker reaches it (e.g. to click Stop mid-answer) and its
    result yielded."""

    events: list = field(
        default_factory=lambda: [
            {"type": "delta", "text": ANSWER[0]},
            {"type": "delta", "text": ANSWER[1]},
            {
                "type": "citation",
                "index": 1,
                "title": "Refund policy",
                "source": "policies/refunds.md",
                "passage_id": "p1",
            },
            {"type": "usage", "input_tokens": 1200, "output_tokens": 300},
        ]
    )
    calls: list = field(default_factory=list)

    def __call__(self, tenant: Tenant, invocation: Invocation):
        self.calls.append(invocation.pk)
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event() if callable(event) else event
