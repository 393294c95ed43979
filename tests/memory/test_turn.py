"""A chat turn end to end with the local runtime: the agent remembers a stated fact, and a
later conversation recalls it; a recall failure never fails the turn."""

from __future__ import annotations

import pytest

from agents import runtime_gateway
from agents.memory import stores
from agents.models import Message
from agents.runtime.memory import durable_facts
from tenants.context import tenant_context
from tests.memory.helpers import entitle, memory_catalogue, records


@pytest.fixture
def chat(client, world, settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    monkeypatch.setattr(runtime_gateway, "_local_client", None)
    entitle(world.a.tenant, world.b.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)

    def ask(user, text, slug="alpha"):
        client.force_login(user)
        conversation_url = client.post(f"/t/{slug}/chat/new/", {"agent": catalogue.helpdesk.pk})["Location"]
        with django_capture_on_commit_callbacks(execute=True):
            client.post(conversation_url + "messages/", {"text": text})
        tenant = world.a.tenant if slug == "alpha" else world.b.tenant
        with tenant_context(tenant):
            return Message.objects.filter(role=Message.Role.ASSISTANT).latest("created_at")

    return ask


def test_a_stated_fact_is_remembered_and_recalled_in_a_later_conversation(world, chat):
    first = chat(world.a.member, "Remember that my favourite colour is teal.")
    assert first.status == "done", first.error
    [record] = records(world.a)
    assert record.content == "my favourite colour is teal."
    assert record.user_id == world.a.member.pk
    assert record.namespace == f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"

    later = chat(world.a.member, "What is my favourite colour?")

    assert later.status == "done", later.error
    assert 'From your long-term memory: "my favourite colour is teal."' in later.content
    assert len(records(world.a)) == 1  # a question is not a fact


def test_another_member_and_another_tenant_recall_nothing(world, chat):
    chat(world.a.member, "Remember that my favourite colour is teal.")

    colleague = chat(world.a.admin, "What is my favourite colour?")
    stranger = chat(world.b.member, "What is my favourite colour?", slug="bravo")

    for answer in (colleague, stranger):
        assert answer.status == "done", answer.error
        assert "teal" not in answer.content and "long-term memory" not in answer.content


def test_without_the_feature_the_agent_neither_remembers_nor_recalls(world, chat):
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])

    answer = chat(world.a.member, "My name is Ada.")

    assert answer.status == "done", answer.error
    assert records(world.a) == []


def test_a_failing_store_never_fails_the_turn(world, chat, monkeypatch):
    def unavailable(*args, **kwargs):
        raise stores.StoreUnavailable("down")

    monkeypatch.setattr(stores.LocalStore, "recall", unavailable)
    monkeypatch.setattr(stores.LocalStore, "remember", unavailable)

    answer = chat(world.a.member, "My name is Ada. What can you do?")

    assert answer.status == "done", answer.error
    assert answer.content.startswith("[Offline model]")
    assert records(world.a) == []


@pytest.mark.parametrize(
    ("prompt", "facts"),
    [
        ("Remember that I work in the Lisbon office.", ["I work in the Lisbon office."]),
        ("please remember: invoices go to Jo", ["invoices go to Jo"]),
        (
            "Hi! My name is Ada. I prefer short answers. How are refunds paid?",
            ["My name is Ada.", "I prefer short answers."],
        ),
        ("What is my name?", []),
        ("Do you remember that I prefer tea?", []),
        ("Refunds take how long", []),
        ("My name is Ada.\nMy name is Ada.", ["My name is Ada."]),
        ("remember that a. remember that b. remember that c. remember that d.", ["a.", "b.", "c."]),
    ],
)
def test_the_rule_for_durable_facts(prompt, facts):
    assert durable_facts(prompt) == facts
