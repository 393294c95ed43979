"""The worker's side of the relay: what the Publisher writes, and in how many writes."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from agents import streaming
from agents.models import MessageStatus
from tenants.context import tenant_context
from tests.agents.helpers import make_turn


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["database", "redis"])
def relay(request, settings):
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


@pytest.fixture
def writes(monkeypatch):
    """The batches the Publisher hands to the relay, as (seq, kind) lists."""
    seen: list[list[tuple[int, str]]] = []
    original = streaming.publish_many

    def recording(invocation_id, events):
        seen.append([(seq, kind) for seq, kind, _ in events])
        return original(invocation_id, events)

    monkeypatch.setattr(streaming, "publish_many", recording)
    return seen


def relayed(world, turn) -> list[tuple[int, str, dict]]:
    with tenant_context(world.a.tenant):
        return [(e.seq, e.kind, e.data) for e in streaming.read(turn.pk, 0)]


def test_it_sends_a_deferred_event_with_the_next_write(world, turn, writes):
    with tenant_context(world.a.tenant):
        publisher = streaming.Publisher(turn.pk, Clock(), start=0)
        publisher.emit("status", {"status": "running"})
        publisher.emit("status", {"status": "streaming"}, defer=True)
        publisher.delta("Hello")
        publisher.emit("done", {"message_id": 7})
    assert writes == [[(1, "status")], [(2, "status"), (3, "delta")], [(4, "done")]]
    assert relayed(world, turn) == [
        (1, "status", {"status": "running"}),
        (2, "status", {"status": "streaming"}),
        (3, "delta", {"text": "Hello"}),
        (4, "done", {"message_id": 7}),
    ]


def test_the_first_text_goes_out_at_once_with_what_waits(world, turn, writes):
    # Without it, a runtime that pauses after its first words (a slow model, a tool call
    # being prepared) would keep them from the person until its next event.
    with tenant_context(world.a.tenant):
        publisher = streaming.Publisher(turn.pk, Clock(), start=0)
        publisher.emit("status", {"status": "streaming"}, defer=True)
        publisher.delta("")  # no text yet: nothing to send
        assert writes == []
        publisher.delta("Hel")
    assert writes == [[(1, "status"), (2, "delta")]]
    assert relayed(world, turn)[-1] == (2, "delta", {"text": "Hel"})


def test_it_coalesces_later_deltas_by_size_or_time(world, turn, writes):
    clock = Clock()
    with tenant_context(world.a.tenant):
        publisher = streaming.Publisher(turn.pk, clock, start=0)
        publisher.delta("Hel")
        publisher.delta("lo")
        publisher.delta(", ")
        assert writes == [[(1, "delta")]]  # neither enough text nor enough time since
        clock.now += streaming.Publisher.FLUSH_SECONDS
        publisher.delta("world")
        publisher.delta("x" * streaming.Publisher.FLUSH_CHARS)
    assert writes == [[(1, "delta")], [(2, "delta")], [(3, "delta")]]
    assert [data["text"] for _, _, data in relayed(world, turn)] == ["Hel", "lo, world", "x" * 48]


def test_it_continues_after_what_an_earlier_attempt_sent(world, turn, writes):
    with tenant_context(world.a.tenant):
        streaming.Publisher(turn.pk, Clock(), start=0).emit("status", {"status": "running"})
        retry = streaming.Publisher(turn.pk, Clock())
        retry.emit("reset", {"attempt": 2})
    assert [seq for seq, _, _ in relayed(world, turn)] == [1, 2]
