"""Conversations started and left before their first message are deleted after a day, in every tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Conversation
from agents.tasks import delete_abandoned_conversations
from tenants.context import tenant_context
from tests.agents.helpers import make_turn

pytestmark = pytest.mark.django_db


def _started(side, agent, *, days_ago: float, title: str = "") -> Conversation:
    with tenant_context(side.tenant):
        conversation = Conversation.objects.create(user=side.member, agent=agent, title=title)
        Conversation.objects.filter(pk=conversation.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return conversation


def _left(side) -> set[int]:
    with tenant_context(side.tenant):
        return set(Conversation.objects.values_list("pk", flat=True))


def test_it_deletes_conversations_nobody_wrote_in_nor_named_after_a_day_in_every_tenant(world, catalogue):
    agent = catalogue.helpdesk
    abandoned_a = _started(world.a, agent, days_ago=2)
    abandoned_b = _started(world.b, agent, days_ago=1.5)
    just_started = _started(world.a, agent, days_ago=0.5)
    named = _started(world.a, agent, days_ago=3, title="Ideas for later")
    written_in, _, _ = make_turn(world.b.tenant, world.b.member, agent)
    with tenant_context(world.b.tenant):
        Conversation.objects.filter(pk=written_in.pk).update(created_at=timezone.now() - timedelta(days=5))

    assert delete_abandoned_conversations() == 2

    assert _left(world.a) == {just_started.pk, named.pk}
    assert _left(world.b) == {written_in.pk}
    assert abandoned_a.pk not in _left(world.a) and abandoned_b.pk not in _left(world.b)


def test_it_leaves_nothing_to_do_the_second_time(world, catalogue):
    _started(world.a, catalogue.helpdesk, days_ago=2)
    assert delete_abandoned_conversations() == 1
    assert delete_abandoned_conversations() == 0


def test_a_deleted_conversation_with_turns_keeps_its_rows(world, catalogue):
    """Its owner deleted it: emptied and untitled, but its invocations are the record behind
    its usage events (services.delete_conversation), so it is not "abandoned"."""
    deleted, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        Conversation.objects.filter(pk=deleted.pk).update(
            title="", deleted_at=timezone.now(), created_at=timezone.now() - timedelta(days=9)
        )
    assert delete_abandoned_conversations() == 0
    assert _left(world.a) == {deleted.pk}
