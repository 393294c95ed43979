"""Turns through the real services: admission, the worker's run and metering."""

from __future__ import annotations

from agents import services, turns
from agents.models import Invocation
from tenants.context import tenant_context
from tenants.services import Actor


def actor(side, role: str = "member") -> Actor:
    return Actor(user=side.user(role), membership=side.memberships[role])


def ask(side, agent, text: str = "What is the refund window?", role: str = "member") -> Invocation:
    """Start a conversation and post one message (admission runs); the turn stays queued."""
    with tenant_context(side.tenant):
        who = actor(side, role)
        conversation = services.start_conversation(who, agent.pk)
        return services.post_message(who, conversation, text)


def run(side, invocation) -> str:
    """What the worker does with the queued turn."""
    with tenant_context(side.tenant):
        return turns.run(side.tenant, str(invocation.pk))


def ask_and_run(side, agent, text: str = "What is the refund window?", role: str = "member") -> Invocation:
    invocation = ask(side, agent, text, role)
    run(side, invocation)
    return invocation
