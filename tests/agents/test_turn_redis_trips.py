"""Redis on the way to the runtime: between the claim and the runtime call a turn needs the
relay (its "running" status, which the person sees before the runtime answers) and the
skills cache (what the agent follows). With Redis both, they go in one round trip: each
trip is a wait on the path that queue_to_runtime_ms measures (tests/bench/queue_latency)."""

from __future__ import annotations

import pytest
import redis.client

from agents import runtime_gateway, services, streaming, turns
from tenants.context import tenant_context
from tests.billing.helpers import actor
from tests.skills.helpers import attach, shared_skill

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not streaming.uses_redis(), reason="the relay and the cache are Redis only with REDIS_URL"),
]


class Recording:
    """A runtime client noting, when it is called, the Redis round trips so far and the
    turn's stream as the browser would read it then."""

    name = "recording"

    def __init__(self, trips: list):
        self.trips = trips
        self.seen = None
        self.requests = []

    def invoke(self, request, context):
        from agents.runtime.contract import Delta, Done, Usage

        self.seen = (list(self.trips), [e.kind for e in _stream(request.invocation_id)])
        self.requests.append(request)
        return iter([Delta(text="Refunds within 30 days."), Usage(input_tokens=3, output_tokens=2), Done()])


class _Trips(list):
    state: dict


def _stream(invocation_id):
    return streaming._decode_redis(streaming._redis().xrange(streaming._key(invocation_id)))


@pytest.fixture
def trips(monkeypatch):
    """Every Redis round trip (a command or a pipeline) while `trips.on` is set."""
    seen = _Trips()
    state = {"on": False}
    command, pipeline = redis.client.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self, *args, **options):
        if state["on"]:
            seen.append(args[0])
        return command(self, *args, **options)

    def counted_pipeline(self, *args, **kwargs):
        if state["on"]:
            seen.append("pipeline:" + ",".join(str(c[0][0]) for c in self.command_stack))
        return pipeline(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Redis, "execute_command", counted_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)
    seen.state = state
    return seen


@pytest.mark.parametrize("with_skill", [False, True])
def test_one_redis_round_trip_between_the_task_and_the_runtime(world, catalogue, monkeypatch, trips, with_skill):
    if with_skill:
        attach(world.a, catalogue.helpdesk, shared_skill(world.a.tenant.tier))
    client = Recording(trips)
    monkeypatch.setattr(runtime_gateway, "client_for", lambda kind, tenant: client)
    with tenant_context(world.a.tenant):
        who = actor(world.a)
        conversation = services.start_conversation(who, catalogue.helpdesk.pk)
    for question in ("First?", "Second?"):  # the first turn fills the skills cache
        with tenant_context(world.a.tenant):
            invocation = services.post_message(who, conversation, question)
        trips.clear()
        trips.state["on"] = True
        with tenant_context(world.a.tenant):
            assert turns.run(world.a.tenant, str(invocation.pk)) == "done"
        trips.state["on"] = False
    before_runtime, stream_then = client.seen
    assert len(before_runtime) == 1, before_runtime
    # The person still sees the turn running before the runtime is called.
    assert stream_then == ["status"]
    assert _stream(invocation.pk)[0].data == {"status": "running"}
    assert [skill.name for skill in client.requests[-1].skills] == (["Handle a refund request"] if with_skill else [])
