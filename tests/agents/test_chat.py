"""The browser chat: starting a conversation, posting a turn, stopping, retrying, feedback.

Turns run inline (Celery eager, after the transaction commits) against a fake
runtime at agents.runtime_gateway.invoke; everything else is the real path.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages

from agents import runtime_gateway, streaming, turns
from agents.models import Conversation, Invocation, Message, MessageStatus
from agents.services import MAX_MESSAGE_CHARS
from billing.models import UsageEvent
from tenants.context import tenant_context
from tests.agents.helpers import ANSWER, make_turn
from tests.guardrails.conftest import set_tier_policy

HX = {"HTTP_HX_REQUEST": "true"}


def chat_url(side, rest: str = "") -> str:
    return f"/t/{side.tenant.slug}/chat/{rest}"


def signed_in_as(client, user):
    client.force_login(user)
    return client


def in_tenant(side, fn):
    with tenant_context(side.tenant):
        return fn()


def start(client, side, agent) -> Conversation:
    response = client.post(chat_url(side, "new/"), {"agent": agent.pk})
    assert response.status_code == 302
    conversation = in_tenant(side, lambda: Conversation.objects.order_by("-pk").first())
    assert response["Location"] == chat_url(side, f"{conversation.pk}/")
    return conversation


def post(client, side, conversation, text, capture, *, run=True):
    """Post a message as htmx does; with run, the queued turn runs once the request commits."""
    with capture(execute=run):
        return client.post(chat_url(side, f"{conversation.pk}/messages/"), {"text": text}, **HX)


def counts(side) -> tuple[int, int, int]:
    return in_tenant(side, lambda: (Message.objects.count(), Invocation.objects.count(), UsageEvent.objects.count()))


def flash(response) -> str:
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    """A's member signed in, with a new conversation with the helpdesk."""
    signed_in_as(client, world.a.member)
    return start(client, world.a, catalogue.helpdesk)


# --- the chat home --------------------------------------------------------------------


def test_it_lists_the_enabled_agents_and_the_members_own_conversations(client, world, catalogue):
    make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Mine")
    make_turn(world.a.tenant, world.a.admin, catalogue.helpdesk, question="The admin's")
    response = signed_in_as(client, world.a.member).get(chat_url(world.a))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Helpdesk" in body
    assert "Not enabled" not in body
    assert "Mine" in body
    assert "The admin&#x27;s" not in body and "The admin's" not in body


def test_it_says_so_when_no_agent_is_enabled(client, world):
    response = signed_in_as(client, world.a.member).get(chat_url(world.a))
    assert response.status_code == 200
    assert b"No agents available yet" in response.content
    assert b"Ask them to enable one" in response.content
    assert b'href="/t/alpha/agents/"' not in response.content
    assert b"No conversations yet." in response.content


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_it_sends_whoever_may_enable_agents_to_where_they_are_enabled(client, world, role):
    response = signed_in_as(client, getattr(world.a, role)).get(chat_url(world.a))
    body = response.content.decode()
    assert "No agents available yet" in body
    assert "You decide which agents may act in Alpha Inc" in body
    assert '<a class="btn btn-primary" href="/t/alpha/agents/">' in body  # not just the navigation's link
    assert "Ask them to enable one" not in body


def test_it_neither_lists_nor_counts_conversations_nobody_wrote_in(client, world, catalogue):
    written, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Refunds?")
    signed_in_as(client, world.a.member)
    empty = [start(client, world.a, catalogue.helpdesk) for _ in range(3)]

    home = client.get(chat_url(world.a)).content.decode()
    assert 'Your conversations <span class="count">1</span>' in home
    assert f'href="{chat_url(world.a, f"{written.pk}/")}"' in home
    assert all(f'href="{chat_url(world.a, f"{c.pk}/")}"' not in home for c in empty)

    # The open one is listed while it is still empty, the other empty ones are not.
    page = client.get(chat_url(world.a, f"{empty[0].pk}/")).content.decode()
    assert page.count('class="conversation-title"') == 2
    assert f'id="conversation-title-{empty[0].pk}">New conversation<' in page
    assert f'id="conversation-title-{empty[1].pk}"' not in page


def test_it_shows_the_chat_link_to_members_only(client, world):
    assert b'href="/t/alpha/chat/"' in signed_in_as(client, world.a.member).get("/t/alpha/").content
    assert b'href="/t/alpha/chat/"' not in signed_in_as(client, world.a.billing).get("/t/alpha/").content


# --- a turn, end to end -----------------------------------------------------------------


def test_it_starts_a_conversation_and_answers_a_message(
    client, world, catalogue, runtime, chatting, django_capture_on_commit_callbacks
):
    response = post(client, world.a, chatting, "How long is the refund window?", django_capture_on_commit_callbacks)

    assert response.status_code == 202
    invocation = in_tenant(world.a, lambda: Invocation.objects.get())
    body = response.content.decode()
    assert "How long is the refund window?" in body
    # The page's stream carries a stream token, so it skips Django (tests/agents/test_stream_token.py).
    assert (
        f'data-stream-url="/t/alpha/chat/turns/{invocation.pk}/events/?st={world.a.tenant.pk}.{world.a.member.pk}:'
        in body
    )
    assert f'data-fragment-url="/t/alpha/chat/messages/{invocation.assistant_message_id}/"' in body
    assert "Stop" in body

    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
        answer = Message.objects.get(pk=invocation.assistant_message_id)
        [usage] = UsageEvent.objects.all()
        conversation = Conversation.objects.get(pk=chatting.pk)
    assert runtime.calls == [invocation.pk]
    assert (invocation.status, answer.status) == ("done", "done")
    assert answer.content == "".join(ANSWER)
    assert answer.citations == [
        {"index": 1, "title": "Refund policy", "source": "policies/refunds.md", "passage_id": "p1"}
    ]
    assert answer.model_label == "Offline model"
    assert conversation.title == "How long is the refund window?"
    assert usage.invocation_id == invocation.pk
    assert (usage.input_tokens, usage.output_tokens, usage.outcome) == (1200, 300, "done")
    # 1.2k in at 0.001 + 0.3k out at 0.002 per 1k tokens
    assert usage.cost == Decimal("0.00180000")
    assert isinstance(usage.cost, Decimal)


def test_it_shows_the_finished_answer_with_sources_feedback_and_the_offline_label(
    client, world, chatting, django_capture_on_commit_callbacks
):
    post(client, world.a, chatting, "Refunds?", django_capture_on_commit_callbacks)
    answer = in_tenant(world.a, lambda: Message.objects.get(role="assistant"))

    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    fragment = client.get(chat_url(world.a, f"messages/{answer.pk}/")).content.decode()

    for body in (page, fragment):
        assert "The refund window is <strong>30 days</strong> [1].</p>" in body
        assert "Refund policy" in body and "policies/refunds.md" in body
        assert "Offline model" in body
        assert f"/t/alpha/chat/messages/{answer.pk}/feedback/" in body
        assert 'data-copy="The refund window is **30 days** [1]."' in body
        assert "data-stream-url" not in body


def test_it_bills_an_unreported_usage_as_an_estimate(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    runtime.events = [{"type": "delta", "text": "x" * 40}]
    post(client, world.a, chatting, "12345678", django_capture_on_commit_callbacks)
    [usage] = in_tenant(world.a, lambda: list(UsageEvent.objects.all()))
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (2, 10, True)


# --- who may chat, with what ----------------------------------------------------------------


def test_it_refuses_an_agent_the_tenant_has_not_enabled(client, world, catalogue):
    response = signed_in_as(client, world.a.member).post(chat_url(world.a, "new/"), {"agent": catalogue.not_enabled.pk})
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a)
    assert "This agent is not available to you." in flash(response)
    assert in_tenant(world.a, lambda: Conversation.objects.count()) == 0


def test_it_refuses_a_message_once_the_agent_is_no_longer_enabled(
    client, world, chatting, django_capture_on_commit_callbacks
):
    from tenants.identity.models import AgentGrant

    in_tenant(world.a, lambda: AgentGrant.objects.all().delete())
    response = post(client, world.a, chatting, "Still there?", django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert b"This agent is not available to you." in response.content
    assert counts(world.a) == (0, 0, 0)


def test_it_answers_404_for_a_teammates_conversation(client, world, catalogue, runtime, eager):
    conversation, answer, invocation = make_turn(world.a.tenant, world.a.admin, catalogue.helpdesk)
    signed_in_as(client, world.a.member)
    urls = [
        ("get", chat_url(world.a, f"{conversation.pk}/")),
        ("post", chat_url(world.a, f"{conversation.pk}/messages/")),
        ("get", chat_url(world.a, f"messages/{answer.pk}/")),
        ("post", chat_url(world.a, f"messages/{answer.pk}/feedback/")),
        ("get", chat_url(world.a, f"turns/{invocation.pk}/events/")),
        ("post", chat_url(world.a, f"turns/{invocation.pk}/cancel/")),
        ("post", chat_url(world.a, f"turns/{invocation.pk}/retry/")),
    ]
    for method, url in urls:
        response = getattr(client, method)(url, {"text": "hi", "value": "1"})
        assert response.status_code == 404, url
    assert counts(world.a) == (2, 1, 0)
    assert runtime.calls == []


def test_it_answers_404_to_a_member_of_another_tenant(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, question="Alpha secret")
    signed_in_as(client, world.b.member)
    for url in (chat_url(world.a), chat_url(world.a, f"{conversation.pk}/")):
        response = client.get(url)
        assert response.status_code == 404
        assert b"Alpha secret" not in response.content
    # ...and under their own tenant, A's conversation does not exist either.
    response = client.get(chat_url(world.b, f"{conversation.pk}/"))
    assert response.status_code == 404


def test_it_forbids_chat_to_the_billing_role(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.billing, catalogue.helpdesk)
    signed_in_as(client, world.a.billing)
    assert client.get(chat_url(world.a)).status_code == 403
    assert client.post(chat_url(world.a, "new/"), {"agent": catalogue.helpdesk.pk}).status_code == 403
    assert client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "hi"}, **HX).status_code == 403


# --- bad messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "Write a message first."),
        ("   \n\t ", "Write a message first."),
        ("x" * (MAX_MESSAGE_CHARS + 1), "Messages are limited to 20,000 characters."),
    ],
    ids=["empty", "blank", "too-long"],
)
def test_it_refuses_an_empty_or_too_long_message_and_writes_nothing(
    client, world, runtime, chatting, django_capture_on_commit_callbacks, text, error
):
    response = post(client, world.a, chatting, text, django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert b'class="alert alert-error composer-alert" role="alert"' in response.content
    assert counts(world.a) == (0, 0, 0)
    assert runtime.calls == []


def test_it_accepts_a_message_of_exactly_the_limit(client, world, chatting, django_capture_on_commit_callbacks):
    response = post(client, world.a, chatting, "x" * MAX_MESSAGE_CHARS, django_capture_on_commit_callbacks)
    assert response.status_code == 202


def test_it_refuses_a_second_message_while_an_answer_is_being_written(
    client, world, chatting, django_capture_on_commit_callbacks
):
    assert post(client, world.a, chatting, "First", django_capture_on_commit_callbacks, run=False).status_code == 202
    response = post(client, world.a, chatting, "Second", django_capture_on_commit_callbacks, run=False)
    assert response.status_code == 400
    assert "Wait for the current answer to finish (or stop it) before sending another message." in (
        response.content.decode()
    )
    assert counts(world.a) == (2, 1, 0)


def test_it_redirects_a_plain_form_post_back_to_the_conversation(
    client, world, chatting, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(chat_url(world.a, f"{chatting.pk}/messages/"), {"text": "No htmx"})
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a, f"{chatting.pk}/")
    assert in_tenant(world.a, lambda: Invocation.objects.get().status) == "done"


# --- stopping --------------------------------------------------------------------------------


def test_it_cancels_a_queued_turn_which_then_never_runs_nor_bills(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    # The turn is queued but its task has not run yet (the callbacks are held back).
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(chat_url(world.a, f"{chatting.pk}/messages/"), {"text": "Never mind"}, **HX)
    invocation = in_tenant(world.a, lambda: Invocation.objects.get())

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(chat_url(world.a, f"turns/{invocation.pk}/cancel/"), **HX)
    assert response.status_code == 202

    for task in queued:  # the worker picks the task up late: it finds the turn cancelled
        task()
    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
        answer = Message.objects.get(pk=invocation.assistant_message_id)
        events = [(event.seq, event.kind) for event in streaming.read(invocation.pk, 0)]
        usage = list(UsageEvent.objects.values_list("outcome", "input_tokens", "output_tokens", "cost"))
    assert (invocation.status, answer.status) == ("cancelled", "cancelled")
    assert runtime.calls == []
    # Cancelled before it ran: no runtime time, no tokens — one zero-usage event (every turn is counted).
    assert usage == [("cancelled", 0, 0, 0)]
    assert events == [(1, "cancelled")]


def test_it_stops_a_running_turn_keeps_the_partial_answer_and_bills_it_once(
    client, world, runtime, chatting, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(turns, "CANCEL_CHECK_SECONDS", 0)

    def stop_from_another_request():
        invocation = Invocation.objects.get()
        assert client.post(chat_url(world.a, f"turns/{invocation.pk}/cancel/"), **HX).status_code == 202
        return {"type": "status"}  # an event kind the worker ignores

    runtime.events = [
        {"type": "delta", "text": "The first half"},
        stop_from_another_request,
        {"type": "delta", "text": " and the rest."},
        {"type": "usage", "input_tokens": 10, "output_tokens": 4},
    ]
    post(client, world.a, chatting, "Long question", django_capture_on_commit_callbacks)

    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.get()
        answer = Message.objects.get(pk=invocation.assistant_message_id)
        [usage] = UsageEvent.objects.all()
        last = streaming.read(invocation.pk, 0)[-1]
    assert (invocation.status, answer.status) == ("cancelled", "cancelled")
    assert answer.content == "The first half"
    assert (usage.outcome, usage.invocation_id) == ("cancelled", invocation.pk)
    assert last.kind == "cancelled"
    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert "Stopped: the answer above is incomplete." in page
    assert f"/t/alpha/chat/turns/{invocation.pk}/retry/" in page


# --- failing and retrying ------------------------------------------------------------------------


def test_it_shows_a_failed_turn_with_its_reason_and_retries_it_keeping_the_question(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    good = list(runtime.events)
    runtime.events = [
        {"type": "delta", "text": "Half an ans"},
        runtime_gateway.RuntimeRejected("The model refused the request (content policy)."),
    ]
    post(client, world.a, chatting, "Tricky question", django_capture_on_commit_callbacks)
    failed = in_tenant(world.a, lambda: Invocation.objects.get())
    assert failed.status == "failed"

    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert "The model refused the request (content policy)." in page
    retry_url = f"/t/alpha/chat/turns/{failed.pk}/retry/"
    assert f'action="{retry_url}"' in page
    assert "Retry" in page

    runtime.events = good
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retry_url)
    assert response.status_code == 302
    assert response["Location"] == chat_url(world.a, f"{chatting.pk}/")

    with tenant_context(world.a.tenant):
        failed.refresh_from_db()
        retried = Invocation.objects.exclude(pk=failed.pk).get()
        questions = list(Message.objects.filter(role="user").values_list("content", flat=True))
        answer = Message.objects.get(role="assistant")
        usage = dict(UsageEvent.objects.values_list("invocation_id", "outcome"))
    assert questions == ["Tricky question"]
    assert (retried.user_message_id, retried.assistant_message_id) == (failed.user_message_id, answer.pk)
    assert (failed.status, retried.status, answer.status) == ("failed", "done", "done")
    assert (answer.content, answer.error) == ("".join(ANSWER), "")
    # One usage event per invocation: the failed attempt's and the retry's.
    assert usage == {failed.pk: "failed", retried.pk: "done"}
    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert "The refund window is <strong>30 days</strong> [1]." in page
    assert "Retry" not in page


BLOCKED_ALERT = re.compile(
    r'<div class="alert alert-warning msg-problem msg-blocked" role="alert"><svg [^>]*>.*?</svg>'
    r"<p><strong>Blocked by guardrails\.</strong> Not here, please\.</p></div>"
)


def answer_shown(body: str, message_id: int) -> str:
    """The answer's <article> in a page or fragment, whitespace between tags collapsed."""
    start = body.index(f'id="msg-{message_id}"')
    return re.sub(r">\s+<", "><", body[start : body.index("</article>", start)])


def test_it_shows_a_failed_turns_blocked_answer_so_far_as_blocked_not_as_answer_text(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"], "block_message": "Not here, please."})
    runtime.events = [
        {"type": "delta", "text": "The plan is Project Nightingale, and"},
        runtime_gateway.RuntimeRejected("The model refused the request (content policy)."),
    ]
    post(client, world.a, chatting, "What is the plan?", django_capture_on_commit_callbacks)
    failed = in_tenant(world.a, lambda: Invocation.objects.get())
    answer = in_tenant(world.a, lambda: Message.objects.get(role="assistant"))
    assert (failed.status, answer.content) == ("failed", "Not here, please.")

    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    fragment = client.get(chat_url(world.a, f"messages/{answer.pk}/")).content.decode()
    for body in (page, fragment):
        shown = answer_shown(body, answer.pk)
        # The block message as a blocked turn shows it, then why there is no answer, and Retry.
        blocked = BLOCKED_ALERT.search(shown)
        assert blocked is not None, shown
        assert "<strong>No answer.</strong> The model refused the request (content policy)." in shown
        assert blocked.end() < shown.index("No answer.")
        assert 'class="prose"' not in shown and "data-copy" not in shown  # not answer text
        assert shown.count("Not here, please.") == 1
        assert f'action="/t/alpha/chat/turns/{failed.pk}/retry/"' in shown
    api = client.get(f"/api/v1/tenants/alpha/conversations/{chatting.pk}/messages/").json()["results"]
    assert [(m["status"], m["content"], m["blocked_by_guardrails"]) for m in api] == [
        ("done", "What is the plan?", False),
        ("failed", "Not here, please.", True),
    ]

    runtime.events = [{"type": "delta", "text": "The plan is to ship on Friday."}]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(chat_url(world.a, f"turns/{failed.pk}/retry/"))
    shown = answer_shown(client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode(), answer.pk)
    assert '<div class="prose"><p>The plan is to ship on Friday.</p></div>' in shown
    assert "Blocked by guardrails." not in shown and "No answer." not in shown


def test_it_retries_a_turn_only_once_and_only_when_it_failed_or_stopped(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    post(client, world.a, chatting, "Fine question", django_capture_on_commit_callbacks)
    done = in_tenant(world.a, lambda: Invocation.objects.get())
    response = client.post(chat_url(world.a, f"turns/{done.pk}/retry/"))
    assert "Only a failed or stopped answer can be retried." in flash(response)

    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=done.pk).update(status=MessageStatus.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(chat_url(world.a, f"turns/{done.pk}/retry/"))
    response = client.post(chat_url(world.a, f"turns/{done.pk}/retry/"))
    assert "This answer was already retried." in flash(response)
    assert in_tenant(world.a, lambda: Invocation.objects.count()) == 2


# --- feedback ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, -1, 0])
def test_it_stores_feedback_on_an_answer(client, world, catalogue, value):
    _, answer, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    response = signed_in_as(client, world.a.member).post(
        chat_url(world.a, f"messages/{answer.pk}/feedback/"), {"value": value}, **HX
    )
    assert response.status_code == 200
    assert in_tenant(world.a, lambda: Message.objects.get(pk=answer.pk).feedback) == value
    pressed = response.content.decode().count('aria-pressed="true"')
    assert pressed == (0 if value == 0 else 1)


@pytest.mark.parametrize("value", ["2", "yes", ""])
def test_it_refuses_bad_feedback(client, world, catalogue, value):
    _, answer, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    response = signed_in_as(client, world.a.member).post(
        chat_url(world.a, f"messages/{answer.pk}/feedback/"), {"value": value}, **HX
    )
    assert response.status_code == 400
    assert b"Your feedback was not saved." in response.content
    assert in_tenant(world.a, lambda: Message.objects.get(pk=answer.pk).feedback) == 0


def test_it_refuses_feedback_on_a_question(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    question = in_tenant(world.a, lambda: Message.objects.get(role="user"))
    response = signed_in_as(client, world.a.member).post(
        chat_url(world.a, f"messages/{question.pk}/feedback/"), {"value": 1}, **HX
    )
    assert response.status_code == 400


def test_it_fails_a_turn_that_breaks_unexpectedly_so_the_conversation_can_go_on(
    client, world, runtime, chatting, django_capture_on_commit_callbacks
):
    runtime.events = [{"type": "delta", "text": "Half"}, KeyError("a bug somewhere")]
    post(client, world.a, chatting, "First try", django_capture_on_commit_callbacks)
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.get()
        answer = Message.objects.get(pk=invocation.assistant_message_id)
        last = streaming.read(invocation.pk, 0)[-1]
    assert (invocation.status, answer.status) == ("failed", "failed")
    assert answer.error == "Something went wrong while answering. Try again."
    assert last.kind == "error"
    assert "a bug somewhere" not in client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert post(client, world.a, chatting, "Second try", django_capture_on_commit_callbacks).status_code == 202
