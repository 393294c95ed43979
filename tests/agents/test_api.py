"""Chat over the REST API: agents, conversations, messages (202), invocations, and problem JSON errors."""

from __future__ import annotations

import json

import pytest

from agents.models import Invocation, Message
from billing.models import UsageEvent
from tenants.context import tenant_context
from tests.agents.helpers import ANSWER, make_turn
from tests.portal.helpers import problem, validation_problem


def api(rest: str, slug: str = "alpha") -> str:
    return f"/api/v1/tenants/{slug}/{rest}"


def post_json(client, url, body=None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def member(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return client


def new_conversation(client, catalogue) -> dict:
    response = post_json(client, api("conversations/"), {"agent": catalogue.helpdesk.pk})
    assert response.status_code == 201, response.content
    return response.json()


def test_it_lists_the_agents_a_member_may_chat_with(member, catalogue):
    body = member.get(api("agents/")).json()
    assert body["count"] == 1
    assert body["results"] == [
        {
            "id": catalogue.helpdesk.pk,
            "slug": "helpdesk",
            "name": "Helpdesk",
            "description": "Helpdesk agent",
            "shared": True,
        }
    ]


def test_it_creates_a_conversation_and_answers_a_message(member, world, catalogue, django_capture_on_commit_callbacks):
    conversation = new_conversation(member, catalogue)
    assert conversation["agent"]["slug"] == "helpdesk"
    assert conversation["title"] == ""

    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(member, api(f"conversations/{conversation['id']}/messages/"), {"text": "Refunds?"})
    assert response.status_code == 202
    accepted = response.json()
    invocation_id = accepted["invocation_id"]
    assert accepted["status"] == "queued"
    # With a stream token, which opens this turn's events without a second authentication
    # (tests/agents/test_stream_token.py).
    assert accepted["stream_url"].startswith(api(f"invocations/{invocation_id}/events/?st="))

    turn = member.get(api(f"invocations/{invocation_id}/")).json()
    assert (turn["id"], turn["status"], turn["conversation"]) == (invocation_id, "done", conversation["id"])
    assert (turn["input_tokens"], turn["output_tokens"], turn["usage_estimated"]) == (1200, 300, False)

    messages = member.get(api(f"conversations/{conversation['id']}/messages/")).json()["results"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "Refunds?", "done"),
        ("assistant", "".join(ANSWER), "done"),
    ]
    assert messages[1]["id"] == accepted["message_id"]
    assert messages[1]["model_label"] == "Offline model"
    assert messages[1]["citations"][0]["title"] == "Refund policy"

    listed = member.get(api("conversations/")).json()
    assert [c["title"] for c in listed["results"]] == ["Refunds?"]
    assert member.get(api(f"conversations/{conversation['id']}/")).json()["title"] == "Refunds?"


def test_it_cancels_a_queued_turn(member, world, catalogue, runtime, django_capture_on_commit_callbacks):
    conversation = new_conversation(member, catalogue)
    with django_capture_on_commit_callbacks(execute=False):  # the worker has not picked it up yet
        accepted = post_json(member, api(f"conversations/{conversation['id']}/messages/"), {"text": "Wait"}).json()
    with tenant_context(world.a.tenant), django_capture_on_commit_callbacks(execute=True):
        response = post_json(member, api(f"invocations/{accepted['invocation_id']}/cancel/"))
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    with tenant_context(world.a.tenant):
        assert Message.objects.get(pk=accepted["message_id"]).status == "cancelled"
        # Nothing ran, so nothing is billed: one zero-usage "cancelled" event (billing counts every turn).
        assert list(UsageEvent.objects.values_list("outcome", "input_tokens", "output_tokens", "cost")) == [
            ("cancelled", 0, 0, 0)
        ]
    assert runtime.calls == []


def test_it_retries_a_failed_turn_as_a_new_invocation(member, world, catalogue, django_capture_on_commit_callbacks):
    conversation, _, failed = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(member, api(f"invocations/{failed.pk}/retry/"))
    assert response.status_code == 202
    retried = response.json()
    assert retried["id"] != str(failed.pk)
    assert member.get(api(f"invocations/{retried['id']}/")).json()["status"] == "done"
    with tenant_context(world.a.tenant):
        assert Invocation.objects.get(pk=retried["id"]).user_message_id == failed.user_message_id


# --- errors are problem JSON ----------------------------------------------------------------


def test_it_refuses_an_agent_that_is_not_enabled(member, catalogue):
    body = validation_problem(post_json(member, api("conversations/"), {"agent": catalogue.not_enabled.pk}))
    assert body["errors"] == {"non_field_errors": ["This agent is not available to you."]}


def test_it_refuses_a_malformed_conversation(member):
    body = validation_problem(post_json(member, api("conversations/"), {"agent": "helpdesk"}))
    assert "agent" in body["errors"]


@pytest.mark.parametrize(
    ("text", "field"),
    [("", "text"), ("   ", "text"), ("x" * 20_001, "text")],
    ids=["empty", "blank", "too-long"],
)
def test_it_refuses_an_empty_or_too_long_message(member, world, catalogue, text, field):
    conversation = new_conversation(member, catalogue)
    body = validation_problem(post_json(member, api(f"conversations/{conversation['id']}/messages/"), {"text": text}))
    assert field in body["errors"]
    with tenant_context(world.a.tenant):
        assert Message.objects.count() == 0


def test_it_refuses_a_second_message_while_one_is_running(member, catalogue, django_capture_on_commit_callbacks):
    conversation = new_conversation(member, catalogue)
    url = api(f"conversations/{conversation['id']}/messages/")
    with django_capture_on_commit_callbacks(execute=False):
        assert post_json(member, url, {"text": "One"}).status_code == 202
        body = validation_problem(post_json(member, url, {"text": "Two"}))
    assert body["errors"] == {
        "non_field_errors": ["Wait for the current answer to finish (or stop it) before sending another message."]
    }


def test_it_answers_404_for_a_teammates_conversation_and_turn(member, world, catalogue):
    conversation, _, invocation = make_turn(world.a.tenant, world.a.admin, catalogue.helpdesk, question="Admin only")
    for response in (
        member.get(api(f"conversations/{conversation.pk}/")),
        member.get(api(f"conversations/{conversation.pk}/messages/")),
        post_json(member, api(f"conversations/{conversation.pk}/messages/"), {"text": "hi"}),
        member.get(api(f"invocations/{invocation.pk}/")),
        post_json(member, api(f"invocations/{invocation.pk}/cancel/")),
        member.get(api(f"invocations/{invocation.pk}/events/"), HTTP_ACCEPT="text/event-stream"),
        member.get(api("invocations/not-a-uuid/")),
    ):
        problem(response, 404)
        assert b"Admin only" not in response.content
    assert [c["id"] for c in member.get(api("conversations/")).json()["results"]] == []


def test_it_answers_404_for_another_tenant(client, world, catalogue):
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    client.force_login(world.b.member)
    problem(client.get(api("conversations/")), 404)
    problem(client.get(api(f"conversations/{conversation.pk}/", slug="bravo")), 404)


def test_it_forbids_chat_to_the_billing_role(client, world, catalogue):
    client.force_login(world.a.billing)
    problem(client.get(api("conversations/")), 403)
    problem(post_json(client, api("conversations/"), {"agent": catalogue.helpdesk.pk}), 403)


# --- a turn's id is a UUID, in the schema and in the routes -------------------------------------


def test_the_schema_publishes_a_turns_id_as_a_uuid(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    turn_paths = {path: ops for path, ops in schema["paths"].items() if "/invocations/{id}/" in path}

    assert len(turn_paths) == 4  # the turn, its events, cancel and retry
    for path, operations in turn_paths.items():
        for method, operation in operations.items():
            [turn_id] = [p for p in operation["parameters"] if p["in"] == "path" and p["name"] == "id"]
            assert turn_id["schema"] == {"type": "string", "format": "uuid"}, f"{method} {path}"


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "12345", "00000000-0000-0000-0000-00000000000g"])
def test_a_turn_id_that_is_not_a_uuid_is_a_404_problem_in_the_api(member, bad_id):
    problem(member.get(api(f"invocations/{bad_id}/")), 404)
    problem(member.get(api(f"invocations/{bad_id}/events/"), HTTP_ACCEPT="text/event-stream"), 404)
    problem(post_json(member, api(f"invocations/{bad_id}/cancel/")), 404)
    problem(post_json(member, api(f"invocations/{bad_id}/retry/")), 404)


def test_the_chat_pages_turn_routes_take_a_uuid_and_answer_404_to_anything_else(member, world, catalogue):
    from django.urls import resolve

    _, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    for step in ("events", "cancel", "retry"):
        match = resolve(f"/t/alpha/chat/turns/{invocation.pk}/{step}/")
        assert match.kwargs["invocation_id"] == invocation.pk, step
        assert member.get(f"/t/alpha/chat/turns/not-a-uuid/{step}/").status_code == 404
        assert member.post(f"/t/alpha/chat/turns/not-a-uuid/{step}/").status_code == 404


# --- an API client: no person to chat for --------------------------------------------------

CHAT_OPERATIONS = [
    ("get", "agents/"),
    ("get", "conversations/"),
    ("post", "conversations/"),
    ("get", "conversations/{conversation}/"),
    ("patch", "conversations/{conversation}/"),
    ("delete", "conversations/{conversation}/"),
    ("get", "conversations/{conversation}/messages/"),
    ("post", "conversations/{conversation}/messages/"),
    ("get", "invocations/{invocation}/"),
    ("get", "invocations/{invocation}/events/"),
    ("post", "invocations/{invocation}/cancel/"),
    ("post", "invocations/{invocation}/retry/"),
]


@pytest.mark.parametrize(("method", "path"), CHAT_OPERATIONS)
def test_an_api_clients_token_is_refused_every_chat_operation_with_why(client, world, catalogue, method, path):
    # Agents act on behalf of a member (ARCHITECTURE.md §4); a client token has no person behind it.
    from tests.factories import client_token

    conversation, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    token = client_token(world.a.tenant, world.a.owner, {"agents:invoke", "tenant:read"})
    url = api(path.format(conversation=conversation.pk, invocation=invocation.pk))

    response = getattr(client, method)(
        url,
        data=json.dumps({"agent": catalogue.helpdesk.pk, "text": "Hi", "title": "x"}) if method != "get" else None,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    body = problem(response, 403)
    assert body["detail"].startswith("Chat needs a person")
    assert "API client" in body["detail"]


def test_the_schema_publishes_a_conversations_messages_as_the_answer_sends_them(member, catalogue):
    conversation = new_conversation(member, catalogue)
    answer = member.get(api(f"conversations/{conversation['id']}/messages/")).json()

    schema = member.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/tenants/{tenant_slug}/conversations/{id}/messages/"]["get"]
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    published = schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    # Every message in one answer, unpaged: no count to promise, no limit or offset to take.
    assert set(published["required"]) <= set(answer) == set(published["properties"]) == {"results"}
    assert not {p["name"] for p in operation.get("parameters", [])} & {"limit", "offset"}
