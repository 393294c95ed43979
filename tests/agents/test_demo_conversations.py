"""The demo seed's ordinary conversations are real turns: answered, cited, metered once."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.demo_conversations import CONVERSATIONS
from agents.models import Invocation, Message, MessageStatus
from billing.models import UsageEvent
from tenants.context import tenant_context
from tenants.models import Tenant

# The turns commit as the product commits them, and run_turn runs when they do.
pytestmark = pytest.mark.django_db(transaction=True)

ASKED = {slug: [q for _person, _agent, questions in chats for q in questions] for slug, chats in CONVERSATIONS.items()}


def answers(slug: str) -> dict[str, Message]:
    """Each demo question of the tenant → the answer that followed it."""
    with tenant_context(Tenant.objects.get(slug=slug)):
        invocations = Invocation.objects.filter(user_message__content__in=ASKED[slug]).select_related(
            "user_message", "assistant_message"
        )
        return {i.user_message.content: i.assistant_message for i in invocations}


def test_the_demo_conversations_are_answered_by_real_turns_and_a_second_seed_adds_none(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path
    call_command("seed_demo", verbosity=0)

    globex = answers("globex")
    assert set(globex) == set(ASKED["globex"])
    assert all(m.status == MessageStatus.DONE for m in globex.values())
    returns = globex["How many days do customers have to return a product?"]
    assert "30 days" in returns.content  # Globex's own handbook (Initech's says 60)
    assert "60 days" not in returns.content
    assert returns.citations, "a knowledge answer cites the tenant's documents"
    # The follow-up is the same conversation's second turn.
    assert globex["And how soon is the refund paid?"].conversation_id == returns.conversation_id

    initech = answers("initech")
    calculated = initech["What is 4900 * 12?"]
    assert calculated.status == MessageStatus.DONE
    assert [call["name"] for call in calculated.tool_calls] == ["calculator"]
    assert "58800" in calculated.content.replace(",", "")

    assert answers("acme")["Hello! What can you help me with?"].status == MessageStatus.DONE

    def metered() -> dict[str, int]:
        counts = {}
        for slug in ASKED:
            with tenant_context(Tenant.objects.get(slug=slug)):
                ids = Invocation.objects.filter(user_message__content__in=ASKED[slug]).values("pk")
                counts[slug] = UsageEvent.objects.filter(invocation_id__in=ids).count()
        return counts

    assert metered() == {slug: len(questions) for slug, questions in ASKED.items()}  # one usage event per turn
    call_command("seed_demo", verbosity=0)
    assert metered() == {slug: len(questions) for slug, questions in ASKED.items()}


def test_the_seed_leaves_celery_eager_to_the_django_setting(settings, tmp_path):
    """The seed runs its turns eagerly and then gives the decision back: a test (or anything)
    after it that sets CELERY_TASK_ALWAYS_EAGER still gets it."""
    from portal.celery import app

    settings.KNOWLEDGE_FILES_DIR = tmp_path
    settings.CELERY_TASK_ALWAYS_EAGER = False
    call_command("seed_demo", verbosity=0)
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert app.conf.task_always_eager is True
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert app.conf.task_always_eager is False
