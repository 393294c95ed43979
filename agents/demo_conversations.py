"""Demo conversations: a few ordinary chats per demo tenant, run as real turns (idempotent).

The guardrail seed (agents.guardrails.seed) gives the demo its screened turns — a card
number, an injection attempt, an investment question — so that the guardrail pages have
figures; on their own they made every demo person's chat list look like a test dump.
These are what people mostly do: ask their agent about their own documents, have it
work something out with a tool, follow up in the same conversation.

Each question goes through the product's own path — `agents.services.post_message`
(limits, input guardrails, the queued invocation) and the `run_turn` task on the
tenant's runtime (the offline model by default), run in this process — so what the
demo shows (citations from the tenant's own documents, a tool call, the usage event
and its cost) is what the product does, not a picture of it.
"""

from __future__ import annotations

import logging

from agents import services
from agents.models import Agent, Message
from tenants.context import tenant_context
from tenants.models import Membership, Tenant
from tenants.services import Actor, ServiceError

log = logging.getLogger(__name__)

# tenant slug → [(person, agent slug, questions asked one after the other in one conversation)].
# Globex (Standard) asks its knowledge bases; Initech (Premium, silo) uses the tools (its AWS
# bindings are not used on embedded defaults, AGENT_RUNTIME=local: its turns, memory and
# knowledge are the portal's own, so nothing here reaches AWS); Acme (Basic) has the chat alone.
CONVERSATIONS = {
    "globex": [
        (
            "member1",
            "helpdesk",
            ["How many days do customers have to return a product?", "And how soon is the refund paid?"],
        ),
        ("member2", "helpdesk", ["When is the support desk open?"]),
        ("admin", "analyst", ["What does the Business plan cost per month, and how many seats does it include?"]),
    ],
    "initech": [
        ("owner", "analyst", ["What is 4900 * 12?"]),
        ("member1", "helpdesk", ["What time is it in Europe/Paris?"]),
    ],
    "acme": [
        ("member1", "helpdesk", ["Hello! What can you help me with?"]),
    ],
}


def seed_conversations() -> int:
    """Run the demo's conversations that are not there yet; the number of turns run.

    Call it outside any transaction: each turn commits as the product commits it, and
    the worker's part runs here at once (Celery eager) rather than waiting for a worker."""
    from portal.celery import app

    # run_turn runs in this process when the message commits. Set on the app's own layer of
    # settings and taken off again after, so the Django setting (CELERY_TASK_ALWAYS_EAGER)
    # decides again for whatever runs next in this process (a test session, say).
    overrides = app.conf.changes
    had, before = "task_always_eager" in overrides, overrides.get("task_always_eager")
    app.conf.task_always_eager = True
    try:
        turns = 0
        for slug, chats in CONVERSATIONS.items():
            tenant = Tenant.objects.select_related("tier").filter(slug=slug).first()
            if tenant is None:
                continue
            with tenant_context(tenant):
                for person, agent_slug, questions in chats:
                    turns += _converse(tenant, f"{person}@{slug}.example", agent_slug, questions)
        return turns
    finally:
        if had:
            overrides["task_always_eager"] = before
        else:
            overrides.pop("task_always_eager", None)


def _converse(tenant: Tenant, email: str, agent_slug: str, questions: list[str]) -> int:
    membership = Membership.objects.select_related("user").filter(user__email=email).first()
    agent = Agent.objects.filter(slug=agent_slug).order_by("owner_tenant_id").first()
    if membership is None or agent is None:
        return 0
    # Idempotent: a person who already asked the first question (in any conversation) has it.
    if Message.objects.filter(
        conversation__user=membership.user, role=Message.Role.USER, content=questions[0]
    ).exists():
        return 0
    actor = Actor(user=membership.user, membership=membership)
    try:
        conversation = services.start_conversation(actor, agent.pk)
    except ServiceError as exc:  # the agent is not offered to this tenant's plan, say
        log.info("demo conversation of %s with %s skipped: %s", email, agent_slug, exc)
        return 0
    asked = 0
    for question in questions:
        try:
            services.post_message(actor, conversation, question)
        except ServiceError as exc:  # a limit, say: what was asked stays, as in the product
            log.info("demo conversation of %s with %s stopped: %s", email, agent_slug, exc)
            break
        asked += 1
    return asked
