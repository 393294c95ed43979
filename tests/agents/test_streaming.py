"""The Server-Sent Events stream of a turn: events in order with ids, and resuming after Last-Event-ID.

The stream view is async and reads the relay from worker threads with their own
database connections, so these tests commit their data (transaction=True).
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings as django_settings

from agents import services, streaming, turns, views
from agents.models import FINAL_STATUSES, Conversation, Invocation, MessageStatus
from tenants.context import tenant_context
from tests.agents.helpers import make_turn
from tests.billing.helpers import actor, ask, ask_and_run, run
from tests.guardrails.conftest import set_tier_policy

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
    _, _, queued = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status=MessageStatus.QUEUED)
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a), queued)
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


# --- every way a turn ends, its stream ends there ------------------------------------------

# Far longer than any stream of an ended turn should stay open: a stream still open after
# NOT_ENDED_AFTER seconds would only have ended when its time was up.
STREAM_TIME = 60
NOT_ENDED_AFTER = 15
BLOCKING_POLICY = {"blocked_terms": ["nightingale"], "block_message": "Not here, please."}


def read_until_it_ends(response) -> str:
    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    async def within_time():
        return await asyncio.wait_for(collect(), NOT_ENDED_AFTER)

    assert response.status_code == 200
    try:
        return async_to_sync(within_time)().decode()
    except TimeoutError:
        pytest.fail(f"the stream of an ended turn was still open after {NOT_ENDED_AFTER} s")


def _answered(world, catalogue, runtime, monkeypatch):
    return ask_and_run(world.a, catalogue.helpdesk)


def _stopped_mid_answer(world, catalogue, runtime, monkeypatch):
    monkeypatch.setattr(turns, "CANCEL_CHECK_SECONDS", 0)  # the worker notices Stop at the next event
    invocation = ask(world.a, catalogue.helpdesk)

    def press_stop():
        with tenant_context(world.a.tenant):
            services.cancel_turn(actor(world.a), Invocation.objects.get(pk=invocation.pk))
        return {"type": "delta", "text": "and more"}

    runtime.events = [{"type": "delta", "text": "The refund "}, press_stop, {"type": "delta", "text": "."}]
    run(world.a, invocation)
    return invocation


def _refused_by_the_runtime(world, catalogue, runtime, monkeypatch):
    runtime.events = [{"type": "delta", "text": "The refund "}, {"type": "error", "message": "Quota gone"}]
    return ask_and_run(world.a, catalogue.helpdesk)


def _answer_blocked(world, catalogue, runtime, monkeypatch):
    set_tier_policy(world.a.tenant.tier, BLOCKING_POLICY)
    runtime.events = [{"type": "delta", "text": "The plan is Project Nightingale."}]
    return ask_and_run(world.a, catalogue.helpdesk)


def _failed_with_its_answer_so_far_blocked(world, catalogue, runtime, monkeypatch):
    set_tier_policy(world.a.tenant.tier, BLOCKING_POLICY)
    runtime.events = [
        {"type": "delta", "text": "The plan is Project Nightingale."},
        {"type": "error", "message": "The runtime gave up."},
    ]
    return ask_and_run(world.a, catalogue.helpdesk)


def _question_blocked(world, catalogue, runtime, monkeypatch):
    set_tier_policy(world.a.tenant.tier, BLOCKING_POLICY)
    return ask(world.a, catalogue.helpdesk, "Tell me about Project Nightingale")  # answered at once, never queued


def _failed_by_the_sweeper(world, catalogue, runtime, monkeypatch):
    invocation = ask(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):  # agents.tasks.fail_stuck_turns, for a turn no worker ran
        turns.fail(invocation.pk, "The agent did not answer in time.")
    return invocation


def _finished_then_interrupted_before_it_said_so(world, catalogue, runtime, monkeypatch):
    """The finish committed a blocked answer, then the worker was cut short: the next
    writer tells the browser how the turn ended, as stored (turns._tell_how_it_ended)."""
    set_tier_policy(world.a.tenant.tier, BLOCKING_POLICY)
    runtime.events = [{"type": "delta", "text": "The plan is Project Nightingale."}]
    finish = turns._finish

    def finish_then_time_limit(*args, **kwargs):
        message_id = finish(*args, **kwargs)
        if message_id is not None:
            raise SoftTimeLimitExceeded()
        return message_id

    monkeypatch.setattr(turns, "_finish", finish_then_time_limit)
    return ask_and_run(world.a, catalogue.helpdesk)


ENDINGS = [
    pytest.param(_answered, "done", id="done"),
    pytest.param(_stopped_mid_answer, "cancelled", id="stopped"),
    pytest.param(_refused_by_the_runtime, "error", id="failed"),
    pytest.param(_answer_blocked, "blocked", id="answer-blocked"),
    pytest.param(_failed_with_its_answer_so_far_blocked, "error", id="failed-answer-blocked"),
    pytest.param(_question_blocked, "blocked", id="question-blocked"),
    pytest.param(_failed_by_the_sweeper, "error", id="failed-by-the-sweeper"),
    pytest.param(_finished_then_interrupted_before_it_said_so, "blocked", id="interrupted-after-its-finish"),
]


@pytest.mark.parametrize("end_the_turn, final_kind", ENDINGS)
def test_the_stream_of_an_ended_turn_ends_at_its_final_event(
    client, world, catalogue, runtime, relay, settings, monkeypatch, end_the_turn, final_kind
):
    settings.SSE_STREAM_MAX_SECONDS = STREAM_TIME
    invocation = end_the_turn(world, catalogue, runtime, monkeypatch)
    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
    assert invocation.status in FINAL_STATUSES
    client.force_login(world.a.member)

    for url in (events_url(invocation), f"/api/v1/tenants/alpha/invocations/{invocation.pk}/events/"):
        got = frames(read_until_it_ends(client.get(url, HTTP_ACCEPT="text/event-stream")))
        assert got[-1][1] == final_kind
        assert [kind for _, kind, _ in got].count(final_kind) == 1


@pytest.mark.parametrize("end_the_turn, final_kind", ENDINGS)
def test_the_stream_of_an_ended_turn_whose_events_were_lost_ends_as_the_turn_did(
    client, world, catalogue, runtime, relay, settings, monkeypatch, end_the_turn, final_kind
):
    # A Redis stream is kept STREAM_TTL_SECONDS, and a worker can die between its commit and
    # its final event: the turn has ended, but no final event will ever come. The stream's
    # quiet-time check sees the ended turn and closes with the final event it implies.
    settings.SSE_STREAM_MAX_SECONDS = STREAM_TIME
    monkeypatch.setattr(views, "STREAM_STATUS_CHECK_SECONDS", 0.2)
    invocation = end_the_turn(world, catalogue, runtime, monkeypatch)
    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
        streaming.erase([invocation.pk])
    client.force_login(world.a.member)

    for url in (events_url(invocation), f"/api/v1/tenants/alpha/invocations/{invocation.pk}/events/"):
        got = frames(read_until_it_ends(client.get(url, HTTP_ACCEPT="text/event-stream")))
        assert [(seq, kind) for seq, kind, _ in got] == [(1, final_kind)]
        data = json.loads(got[-1][2])
        if final_kind == "error":
            assert data["message"] == invocation.error
        else:
            assert data["message_id"] == invocation.assistant_message_id


WORKER_ENDINGS = [ending for ending in ENDINGS if ending.id != "question-blocked"]  # these end in a worker


@pytest.mark.parametrize("end_the_turn, final_kind", WORKER_ENDINGS)
def test_a_conversation_deleted_before_the_final_event_leaves_nothing_in_the_relay(
    world, catalogue, runtime, relay, monkeypatch, end_the_turn, final_kind
):
    # The owner may delete the conversation as soon as the turn's finish commits, a moment
    # before the worker publishes its final event (with the answer's last text, the block
    # message or what replaces the answer): that write must not bring the stream back.
    finish = turns._finish
    deleted = []

    def finish_then_delete(invocation, *args, **kwargs):
        message_id = finish(invocation, *args, **kwargs)
        if message_id is not None:
            conversation = Conversation.objects.get(pk=invocation.conversation_id)
            services.delete_conversation(actor(world.a), conversation)
            deleted.append(invocation.pk)
        return message_id

    monkeypatch.setattr(turns, "_finish", finish_then_delete)
    invocation = end_the_turn(world, catalogue, runtime, monkeypatch)
    assert deleted == [invocation.pk]
    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
        assert invocation.status in FINAL_STATUSES
        assert streaming.read(invocation.pk, 0) == []
        assert streaming.last_seq(invocation.pk) == 0


def test_a_final_event_written_while_the_delete_commits_is_erased_with_it(
    world, catalogue, runtime, relay, monkeypatch
):
    # The other order: the worker's final event lands after the delete's erase, and the
    # worker's look for the delete (another connection) came before the delete committed,
    # so it saw none. The delete erases again once it has committed.
    invocation = ask_and_run(world.a, catalogue.helpdesk)
    erase = streaming.erase
    erases = []

    def erase_then_a_late_final_event(invocation_ids):
        erase(invocation_ids)
        erases.append(list(invocation_ids))
        if len(erases) == 1:
            streaming.publish_final(invocation.pk, "done", {"message_id": invocation.assistant_message_id})

    monkeypatch.setattr(streaming, "erase", erase_then_a_late_final_event)
    with tenant_context(world.a.tenant):
        services.delete_conversation(actor(world.a), Conversation.objects.get(pk=invocation.conversation_id))
        assert streaming.read(invocation.pk, 0) == []
    assert erases == [[invocation.pk], [invocation.pk]]  # in the delete, and once it committed
