"""The Server-Sent Events stream of a turn: events in order with ids, and resuming after Last-Event-ID.

The stream view is async and reads the relay from worker threads with their own
database connections, so these tests commit their data (transaction=True).
"""

from __future__ import annotations

import re
import time

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings

from agents import streaming
from agents.models import MessageStatus
from tenants.context import tenant_context
from tests.agents.helpers import make_turn

pytestmark = pytest.mark.django_db(transaction=True)

FRAME = re.compile(r"id: (\d+)\nevent: (\w+)\ndata: (.*)\n\n")


def read(response) -> str:
    """The whole streamed body (the view streams asynchronously)."""

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    return async_to_sync(collect)().decode()


def frames(body: str) -> list[tuple[int, str, str]]:
    return [(int(seq), kind, data) for seq, kind, data in FRAME.findall(body)]


def events_url(invocation) -> str:
    return f"/t/alpha/chat/turns/{invocation.pk}/events/"


def write_turn_events(tenant, invocation, final: bool = True) -> None:
    """What the worker relays for a short answer (deltas coalesced by the Publisher)."""
    with tenant_context(tenant):
        publisher = streaming.Publisher(invocation.pk, time.monotonic)
        publisher.emit("status", {"status": "running"})
        publisher.emit("delta", {"text": "Hello, "})
        publisher.emit("delta", {"text": "<b>world</b>"})
        publisher.emit("citation", {"index": 1, "title": "Greetings", "source": "kb", "passage_id": "p1"})
        if final:
            publisher.emit("done", {"message_id": invocation.assistant_message_id})


EXPECTED = [
    (1, "status", '{"status":"running"}'),
    (2, "delta", '{"text":"Hello, "}'),
    (3, "delta", '{"text":"<b>world</b>"}'),
    (4, "citation", '{"index":1,"title":"Greetings","source":"kb","passage_id":"p1"}'),
    (5, "done", None),
]


@pytest.fixture(params=["database", "redis"])
def relay(request, settings):
    """Each test runs over the database relay, and over Redis when REDIS_URL is set (as in CI)."""
    if request.param == "redis":
        if not django_settings.REDIS_URL:
            pytest.skip("REDIS_URL is not set")
    else:
        settings.REDIS_URL = ""
    yield request.param
    if request.param == "redis":
        keys = streaming._redis().keys(f"{streaming.KEY_PREFIX}*")
        if keys:
            streaming._redis().delete(*keys)


@pytest.fixture
def turn(world, catalogue, relay):
    _, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status=MessageStatus.STREAMING)
    return invocation


def test_it_streams_a_turns_events_in_order_with_their_ids(client, world, turn):
    write_turn_events(world.a.tenant, turn)
    client.force_login(world.a.member)
    body = read(client.get(events_url(turn)))
    assert body.startswith("retry: 1000\n\n")
    got = frames(body)
    assert [(seq, kind) for seq, kind, _ in got] == [(seq, kind) for seq, kind, _ in EXPECTED]
    assert [data for _, _, data in got[:4]] == [data for _, _, data in EXPECTED[:4]]
    assert got[4][2] == f'{{"message_id":{turn.assistant_message_id}}}'


def test_it_resumes_after_the_last_event_id_without_repeating(client, world, turn):
    write_turn_events(world.a.tenant, turn)
    client.force_login(world.a.member)
    body = read(client.get(events_url(turn), HTTP_LAST_EVENT_ID="2"))
    assert [(seq, kind) for seq, kind, _ in frames(body)] == [(3, "delta"), (4, "citation"), (5, "done")]
    body = read(client.get(events_url(turn) + "?after=4"))
    assert [(seq, kind) for seq, kind, _ in frames(body)] == [(5, "done")]


def test_it_loses_nothing_across_a_reconnect_while_the_answer_is_being_written(client, world, turn, settings):
    settings.SSE_STREAM_MAX_SECONDS = 0.3  # the server ends the stream; the browser reconnects
    write_turn_events(world.a.tenant, turn, final=False)
    client.force_login(world.a.member)
    first = frames(read(client.get(events_url(turn))))
    assert [seq for seq, _, _ in first] == [1, 2, 3, 4]

    with tenant_context(world.a.tenant):  # the worker carries on meanwhile
        publisher = streaming.Publisher(turn.pk, time.monotonic)
        publisher.emit("delta", {"text": " More."})
        publisher.emit("done", {"message_id": turn.assistant_message_id})

    second = frames(read(client.get(events_url(turn), HTTP_LAST_EVENT_ID=str(first[-1][0]))))
    assert [(seq, kind) for seq, kind, _ in second] == [(5, "delta"), (6, "done")]
    assert [seq for seq, _, _ in first + second] == [1, 2, 3, 4, 5, 6]


def test_it_ignores_a_malformed_last_event_id(client, world, turn):
    write_turn_events(world.a.tenant, turn)
    client.force_login(world.a.member)
    body = read(client.get(events_url(turn), HTTP_LAST_EVENT_ID="not-a-number"))
    assert [seq for seq, _, _ in frames(body)] == [1, 2, 3, 4, 5]


def test_it_streams_through_the_api_too(client, world, turn):
    write_turn_events(world.a.tenant, turn)
    client.force_login(world.a.member)
    url = f"/api/v1/tenants/alpha/invocations/{turn.pk}/events/"
    body = read(client.get(url, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="3"))
    assert [(seq, kind) for seq, kind, _ in frames(body)] == [(4, "citation"), (5, "done")]


def test_it_streams_a_cancelled_queued_turn_to_its_end(client, world, catalogue, relay):
    from agents import services
    from tests.tenants.helpers import actor

    _, _, queued = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status=MessageStatus.QUEUED)
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a, "member"), queued)
    client.force_login(world.a.member)
    body = read(client.get(events_url(queued)))
    assert [(seq, kind) for seq, kind, _ in frames(body)] == [(1, "cancelled")]


def test_streams_read_from_the_database_give_their_connections_back(client, world, turn):
    """Each stream reads the database relay on threads of its event loop's executor; a
    connection those threads took from PostgreSQL's pool must go back to it, or more streams
    than the pool has connections (over a process's life, far more) wait for one in vain."""
    pool = django_settings.DATABASES["default"].get("OPTIONS", {}).get("pool") or {}
    write_turn_events(world.a.tenant, turn)
    client.force_login(world.a.member)
    for _ in range(pool.get("max_size", 20) + 2):
        assert [kind for _, kind, _ in frames(read(client.get(events_url(turn))))][-1] == "done"
