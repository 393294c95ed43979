"""Renaming and deleting a conversation, in the browser and over the API.

Deleting hides the conversation from its owner everywhere and keeps the rows behind
it: its invocations are the record each usage event (same id), guardrail event and
trace refers to, so the bill and the usage figures do not move. A conversation with
an answer still being written is not deleted: the owner stops it or waits first.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from agents import services, streaming
from agents.models import Conversation, Invocation, Message
from billing.accounting import month_start
from billing.invoices import draft_invoice
from billing.models import UsageDaily, UsageEvent
from billing.reconcile import reconcile
from tenants.context import tenant_context
from tenants.models import AuditLog
from tenants.services import Actor, ServiceError
from tests.agents.helpers import make_turn
from tests.agents.test_chat import chat_url, flash, in_tenant, post, signed_in_as, start
from tests.portal.helpers import problem, validation_problem


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    signed_in_as(client, world.a.member)
    return start(client, world.a, catalogue.helpdesk)


def api(rest: str, slug: str = "alpha") -> str:
    return f"/api/v1/tenants/{slug}/{rest}"


def send_json(client, method: str, url: str, body=None):
    return getattr(client, method)(url, data=json.dumps(body or {}), content_type="application/json")


def title_of(side, conversation) -> str:
    return in_tenant(side, lambda: Conversation.objects.get(pk=conversation.pk).title)


def billing_snapshot(side) -> tuple:
    """Everything money is computed from, and the month's reconciliation."""
    with tenant_context(side.tenant):
        events = list(UsageEvent.objects.order_by("invocation_id").values())
        rollups = list(UsageDaily.objects.order_by("pk").values())
        report = reconcile(side.tenant, month_start())
    assert report.ok, report.differences
    return events, rollups


# --- rename, in the browser -------------------------------------------------------------


def test_it_renames_a_conversation(client, world, chatting):
    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert f'action="/t/alpha/chat/{chatting.pk}/rename/"' in page
    response = client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "  Refunds\nfor annual plans  "})
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a, f"{chatting.pk}/")
    assert title_of(world.a, chatting) == "Refunds for annual plans"
    assert "Refunds for annual plans" in client.get(chat_url(world.a)).content.decode()


@pytest.mark.parametrize(
    "title, error",
    [
        ("", "Give the conversation a title."),
        ("   \n ", "Give the conversation a title."),
        ("\x00\x01", "Give the conversation a title."),
        ("x" * 201, "A title is at most 200 characters."),
    ],
)
def test_it_refuses_a_title_that_is_empty_or_too_long(client, world, chatting, title, error):
    client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "Before"})
    response = client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": title})
    assert response.status_code == 302
    assert error in flash(response)
    assert title_of(world.a, chatting) == "Before"


def test_a_title_loses_control_characters_and_keeps_200(client, world, chatting):
    client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "Re\x00funds"})
    assert title_of(world.a, chatting) == "Refunds"
    client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "é" * 200})
    assert title_of(world.a, chatting) == "é" * 200


def test_a_renamed_conversation_keeps_its_name_when_its_first_question_comes(
    client, world, chatting, django_capture_on_commit_callbacks
):
    client.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "Mine"})
    post(client, world.a, chatting, "How long is the refund window?", django_capture_on_commit_callbacks)
    assert title_of(world.a, chatting) == "Mine"


# --- delete, in the browser -------------------------------------------------------------


def test_it_asks_before_deleting_and_deletes_with_a_post_only(client, world, chatting):
    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    # The confirmation step: a panel that says what deleting means, with its own button.
    assert "Delete this conversation?" in page
    assert f'action="/t/alpha/chat/{chatting.pk}/delete/"' in page
    assert client.get(chat_url(world.a, f"{chatting.pk}/delete/")).status_code == 405
    assert client.get(chat_url(world.a, f"{chatting.pk}/rename/")).status_code == 405
    assert in_tenant(world.a, lambda: Conversation.objects.get(pk=chatting.pk).deleted_at) is None


def test_delete_and_rename_need_the_csrf_token(world, chatting):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.a.member)
    assert strict.post(chat_url(world.a, f"{chatting.pk}/delete/")).status_code == 403
    assert strict.post(chat_url(world.a, f"{chatting.pk}/rename/"), {"title": "x"}).status_code == 403
    assert in_tenant(world.a, lambda: Conversation.objects.get(pk=chatting.pk).deleted_at) is None


def test_it_deletes_a_conversation_and_leaves_billing_exactly_as_it_was(
    client, world, chatting, django_capture_on_commit_callbacks
):
    post(client, world.a, chatting, "How long is the refund window?", django_capture_on_commit_callbacks)
    with tenant_context(world.a.tenant):
        invoice = draft_invoice(world.a.tenant, month_start())
        invoice_before = (invoice.tokens, invoice.cost, invoice.total)
    before = billing_snapshot(world.a)
    assert len(before[0]) == 1

    response = client.post(chat_url(world.a, f"{chatting.pk}/delete/"))
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a)
    assert "Conversation deleted." in flash(response)
    home = client.get(chat_url(world.a)).content.decode()
    assert "How long is the refund window?" not in home
    assert "No conversations yet." in home
    assert client.get(chat_url(world.a, f"{chatting.pk}/")).status_code == 404

    # The bill, the roll-ups and the record behind them are untouched.
    assert billing_snapshot(world.a) == before
    with tenant_context(world.a.tenant):
        invoice = draft_invoice(world.a.tenant, month_start())
        assert (invoice.tokens, invoice.cost, invoice.total) == invoice_before
        assert (Message.objects.count(), Invocation.objects.count()) == (2, 1)
        assert Conversation.objects.get(pk=chatting.pk).deleted_at is not None
        entry = AuditLog.objects.get(action="chat.conversation_deleted")
    # Conversations are private: the audit log names it by id, never by its title.
    assert (entry.target_id, entry.target_repr, entry.actor_id) == (
        str(chatting.pk),
        f"Conversation {chatting.pk}",
        world.a.member.pk,
    )


def test_deleting_erases_what_was_written_and_keeps_what_it_cost(
    client, world, chatting, django_capture_on_commit_callbacks
):
    post(client, world.a, chatting, "My card is 4111 1111 1111 1111, refund it", django_capture_on_commit_callbacks)
    with tenant_context(world.a.tenant):
        invocation_id = Invocation.objects.get(conversation_id=chatting.pk).pk
        assert streaming.read(invocation_id, 0)
        usage_before = list(UsageEvent.objects.values_list("invocation_id", "input_tokens", "output_tokens"))

    assert client.post(chat_url(world.a, f"{chatting.pk}/delete/")).status_code == 302

    with tenant_context(world.a.tenant):
        conversation = Conversation.objects.get(pk=chatting.pk)
        messages = list(Message.objects.filter(conversation_id=chatting.pk))
        assert conversation.title == ""
        assert len(messages) == 2
        assert [(m.content, m.citations, m.tool_calls, m.error) for m in messages] == [("", [], [], "")] * 2
        assert streaming.read(invocation_id, 0) == []
        assert list(UsageEvent.objects.values_list("invocation_id", "input_tokens", "output_tokens")) == usage_before


def test_it_refuses_to_delete_while_an_answer_is_being_written(
    client, world, chatting, django_capture_on_commit_callbacks
):
    post(client, world.a, chatting, "Refunds?", django_capture_on_commit_callbacks, run=False)
    invocation = in_tenant(world.a, lambda: Invocation.objects.get())
    response = client.post(chat_url(world.a, f"{chatting.pk}/delete/"))
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a, f"{chatting.pk}/")
    assert "An answer is still being written: stop it or wait for it to finish" in flash(response)
    assert client.get(chat_url(world.a, f"{chatting.pk}/")).status_code == 200

    # Stopped, it can go.
    client.post(chat_url(world.a, f"turns/{invocation.pk}/cancel/"))
    assert client.post(chat_url(world.a, f"{chatting.pk}/delete/"))["Location"] == chat_url(world.a)
    assert client.get(chat_url(world.a, f"{chatting.pk}/")).status_code == 404


def test_a_deleted_conversation_is_gone_from_every_route(client, world, catalogue, runtime, eager):
    conversation, answer, invocation = make_turn(
        world.a.tenant, world.a.member, catalogue.helpdesk, question="Gone", status="failed"
    )
    signed_in_as(client, world.a.member)
    assert client.post(chat_url(world.a, f"{conversation.pk}/delete/")).status_code == 302
    for method, url in [
        ("get", chat_url(world.a, f"{conversation.pk}/")),
        ("post", chat_url(world.a, f"{conversation.pk}/messages/")),
        ("post", chat_url(world.a, f"{conversation.pk}/rename/")),
        ("post", chat_url(world.a, f"{conversation.pk}/delete/")),
        ("get", chat_url(world.a, f"messages/{answer.pk}/")),
        ("post", chat_url(world.a, f"messages/{answer.pk}/feedback/")),
        ("get", chat_url(world.a, f"turns/{invocation.pk}/events/")),
        ("post", chat_url(world.a, f"turns/{invocation.pk}/cancel/")),
        ("post", chat_url(world.a, f"turns/{invocation.pk}/retry/")),
    ]:
        assert getattr(client, method)(url, {"text": "again", "value": "1", "title": "x"}).status_code == 404, url
    assert runtime.calls == []
    assert in_tenant(world.a, lambda: (Message.objects.count(), Invocation.objects.count())) == (2, 1)


def test_a_teammate_can_neither_rename_nor_delete_it(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Private")
    signed_in_as(client, world.a.admin)
    assert client.post(chat_url(world.a, f"{conversation.pk}/rename/"), {"title": "Mine now"}).status_code == 404
    assert client.post(chat_url(world.a, f"{conversation.pk}/delete/")).status_code == 404
    with tenant_context(world.a.tenant):
        conversation.refresh_from_db()
    assert (conversation.title, conversation.deleted_at) == ("Private", None)


def test_a_message_posted_as_the_conversation_is_deleted_is_refused_and_writes_nothing(
    world, catalogue, runtime, eager
):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Old")
    actor = Actor(user=world.a.member, membership=world.a.memberships["member"])
    with tenant_context(world.a.tenant):
        opened = services.access_conversation(actor, conversation.pk)  # the page was open...
        services.delete_conversation(actor, opened)  # ...and deleted in another tab
        with pytest.raises(ServiceError, match="This conversation was deleted."):
            services.post_message(actor, opened, "One more thing")
        assert (Message.objects.count(), Invocation.objects.count(), UsageEvent.objects.count()) == (2, 1, 0)


# --- the API ------------------------------------------------------------------------------


@pytest.fixture
def member(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return client


def test_the_api_renames_a_conversation(member, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    response = send_json(member, "patch", api(f"conversations/{conversation.pk}/"), {"title": " Refunds "})
    assert response.status_code == 200
    assert response.json()["title"] == "Refunds"
    assert member.get(api(f"conversations/{conversation.pk}/")).json()["title"] == "Refunds"


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({}, "title", "This field is required."),
        ({"title": ""}, "title", "This field may not be blank."),
        ({"title": "   "}, "title", "This field may not be blank."),
        ({"title": "x" * 201}, "title", "Ensure this field has no more than 200 characters."),
        ({"title": "a\x00b"}, "title", "Null characters are not allowed."),
        ({"title": ["a list"]}, "title", "Not a valid string."),
    ],
)
def test_the_api_explains_a_bad_title(member, world, catalogue, body, field, message):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Kept")
    body = validation_problem(send_json(member, "patch", api(f"conversations/{conversation.pk}/"), body))
    assert body["errors"] == {field: [message]}
    assert title_of(world.a, conversation) == "Kept"


def test_the_api_deletes_a_conversation_and_leaves_billing_as_it_was(
    member, world, catalogue, django_capture_on_commit_callbacks
):
    created = send_json(member, "post", api("conversations/"), {"agent": catalogue.helpdesk.pk}).json()
    with django_capture_on_commit_callbacks(execute=True):
        url = api(f"conversations/{created['id']}/messages/")
        assert send_json(member, "post", url, {"text": "Refunds?"}).status_code == 202
    before = billing_snapshot(world.a)

    response = member.delete(api(f"conversations/{created['id']}/"))
    assert response.status_code == 204
    assert billing_snapshot(world.a) == before
    problem(member.get(api(f"conversations/{created['id']}/")), 404)
    problem(member.delete(api(f"conversations/{created['id']}/")), 404)
    assert member.get(api("conversations/")).json()["results"] == []


def test_the_api_refuses_to_delete_a_conversation_with_an_answer_in_progress(
    member, world, catalogue, django_capture_on_commit_callbacks
):
    created = send_json(member, "post", api("conversations/"), {"agent": catalogue.helpdesk.pk}).json()
    with django_capture_on_commit_callbacks(execute=False):
        send_json(member, "post", api(f"conversations/{created['id']}/messages/"), {"text": "Refunds?"})
    body = problem(member.delete(api(f"conversations/{created['id']}/")), 409)
    assert body["title"] == "Conflict"
    assert body["detail"].startswith("An answer is still being written: stop it or wait for it to finish")
    assert member.get(api(f"conversations/{created['id']}/")).status_code == 200


def test_the_api_answers_404_to_a_teammate(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Private")
    client.force_login(world.a.admin)
    problem(send_json(client, "patch", api(f"conversations/{conversation.pk}/"), {"title": "Mine"}), 404)
    problem(client.delete(api(f"conversations/{conversation.pk}/")), 404)
    assert title_of(world.a, conversation) == "Private"
