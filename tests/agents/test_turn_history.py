"""What the worker sends the runtime: the question, and the conversation so far, oldest first.

On PostgreSQL the claim reads the conversation itself (one round trip less on the way to
the runtime); on SQLite runtime_gateway.turn_facts does. Both must send the same thing."""

from __future__ import annotations

import pytest

from agents import runtime_gateway, services, turns
from tenants.context import tenant_context
from tests.billing.helpers import actor

pytestmark = pytest.mark.django_db


class Capturing:
    name = "capturing"

    def __init__(self):
        self.requests = []

    def invoke(self, request, context):
        from agents.runtime.contract import Delta, Done, Usage

        self.requests.append(request)
        return iter([Delta(text=f"Answer {len(self.requests)}."), Usage(input_tokens=3, output_tokens=2), Done()])


def test_the_runtime_gets_the_question_and_the_conversation_so_far_oldest_first(world, catalogue, monkeypatch):
    client = Capturing()
    monkeypatch.setattr(runtime_gateway, "client_for", lambda kind, tenant: client)
    with tenant_context(world.a.tenant):
        who = actor(world.a)
        conversation = services.start_conversation(who, catalogue.helpdesk.pk)
    for question in ("First?", "Second?", "Third?"):
        with tenant_context(world.a.tenant):
            invocation = services.post_message(who, conversation, question)
            assert turns.run(world.a.tenant, str(invocation.pk)) == "done"
    third = client.requests[-1]
    assert third.prompt == "Third?"
    assert [(m.role, m.content) for m in third.messages] == [
        ("user", "First?"),
        ("assistant", "Answer 1."),
        ("user", "Second?"),
        ("assistant", "Answer 2."),
    ]
    assert client.requests[0].messages == ()


def test_the_history_is_the_last_messages_only(world, catalogue, monkeypatch):
    client = Capturing()
    monkeypatch.setattr(runtime_gateway, "client_for", lambda kind, tenant: client)
    with tenant_context(world.a.tenant):
        who = actor(world.a)
        conversation = services.start_conversation(who, catalogue.helpdesk.pk)
    for n in range(12):
        with tenant_context(world.a.tenant):
            invocation = services.post_message(who, conversation, f"Question {n}?")
            turns.run(world.a.tenant, str(invocation.pk))
    last = client.requests[-1]
    assert len(last.messages) == 20
    assert (last.messages[0].role, last.messages[0].content) == ("user", "Question 1?")
    assert (last.messages[-1].role, last.messages[-1].content) == ("assistant", "Answer 11.")
