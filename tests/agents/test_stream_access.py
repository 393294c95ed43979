"""A person removed from the tenant (or moved to a role that may not chat, or whose tenant the
operator suspends) stops receiving a
turn's events promptly, even while the answer keeps streaming: an open stream re-checks their
access within STREAM_ACCESS_CHECK_SECONDS of the change, and the turn's stream token no longer
opens the fast path (a reconnect goes through Django, which refuses it). Over the database
relay and over Redis (when REDIS_URL is set, as in CI).

The stream view is async and reads the relay from worker threads with their own database
connections, so these tests commit their data (transaction=True)."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from agents import streaming, views
from agents.models import MessageStatus
from tenants import services as tenant_services
from tenants.context import tenant_context
from tenants.models import Membership, TenantStatus, User
from tests import factories
from tests.agents.helpers import make_turn
from tests.agents.test_stream_token import scope, token_url
from tests.agents.test_streaming import events_url, frames, relay  # noqa: F401  (fixture reused)
from tests.billing.helpers import actor

pytestmark = pytest.mark.django_db(transaction=True)

# Deltas keep coming for this long: longer than STREAM_STATUS_CHECK_SECONDS, the only check
# a stream that is never quiet had.
STREAMING_FOR = 20
# How soon after the change the stream must have ended: the documented bound (about 2 s: see
# agents.views STREAM_ACCESS_CHECK_SECONDS) and some slack for a busy test machine. Counted in
# the time the test process ran: see Stalls.
ENDS_WITHIN = 4
# The heartbeat that tells when the process stood still (Stalls): its period, and the lateness
# of a beat that counts as a stall rather than the event loop's ordinary jitter.
BEAT = 0.02
STALL = 0.1


class Stalls:
    """How long, after a moment, the test process stood still: the event loop's heartbeat came
    late (a busy machine gave the process no CPU, a full-suite heap paused it for a collection).

    The stream's time to end is a wall-clock time, so on a loaded machine (the whole suite on a
    2-core box shared with others) a pause of a few seconds made the stream look slow when it
    was only not run. Such pauses stop the heartbeat, the writer and the stream alike; they are
    not part of the stream's promptness, so the bound leaves them out. What the stream spends
    waiting (its access-check interval, a poll, a thread doing the re-check) keeps the loop
    beating, and counts. A stream that blocked the event loop itself would be left out too: the
    test's second bound, STREAM_STATUS_CHECK_SECONDS of wall-clock time, still holds it."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.total = 0.0

    async def beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(BEAT)
            now = time.monotonic()
            late = now - last - BEAT
            if self.since is not None and late > STALL:
                self.total += min(late, now - self.since)  # only the part after `since`
            last = now


@pytest.fixture
def turn(world, catalogue, relay):  # noqa: F811
    _, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status=MessageStatus.STREAMING)
    return invocation


def remove(world) -> None:
    with tenant_context(world.a.tenant):
        membership = Membership.objects.get(user=world.a.member)
        tenant_services.remove_member(actor(world.a, "owner"), membership)


def demote_to_billing(world) -> None:
    with tenant_context(world.a.tenant):
        membership = Membership.objects.get(user=world.a.member)
        tenant_services.change_role(actor(world.a, "owner"), membership, "billing")


def suspend(world) -> None:
    operator = factories.make_user("operator@portal.test", is_staff=True, is_superuser=True)
    tenant_services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoices")


def deactivate(world) -> None:
    """As the Django admin's user form does it: the whole user saved (ModelAdmin.save_model)."""
    member = User.objects.get(pk=world.a.member.pk)
    member.is_active = False
    member.save()


CHANGES = pytest.mark.parametrize(
    "change", [remove, demote_to_billing, suspend], ids=["removed", "demoted to billing", "suspended"]
)


def stream_while_access_changes(client, world, turn, change) -> tuple[str, float, float]:
    """Open the turn's stream as its member, keep an answer streaming, `change` their access
    once the first delta arrived: (what the stream sent, seconds from the change to its end,
    how many of those the process stood still: see Stalls)."""
    client.force_login(world.a.member)
    response = client.get(events_url(turn))
    assert response.status_code == 200

    def publish(seq: int) -> None:
        with tenant_context(world.a.tenant):
            streaming.publish(turn.pk, seq, "delta", {"text": f"part {seq} "})

    async def run() -> tuple[str, float, float]:
        changed_at = None
        received = []
        stalls = Stalls()

        async def keep_streaming():
            for seq in range(1, STREAMING_FOR * 5):
                await sync_to_async(publish, thread_sensitive=False)(seq)
                await asyncio.sleep(0.2)

        writer = asyncio.ensure_future(keep_streaming())
        heartbeat = asyncio.ensure_future(stalls.beat())
        try:
            async for chunk in response.streaming_content:
                received.append(chunk.decode())
                if changed_at is None and "event: delta" in chunk.decode():
                    await sync_to_async(change, thread_sensitive=False)(world)
                    changed_at = stalls.since = time.monotonic()
            ended_after = time.monotonic() - changed_at
        finally:
            writer.cancel()
            heartbeat.cancel()
        return "".join(received), ended_after, stalls.total

    return async_to_sync(asyncio.wait_for)(run(), STREAMING_FOR + 20)


@pytest.mark.parametrize(
    "change",
    [remove, demote_to_billing, suspend, deactivate],
    ids=["removed", "demoted to billing", "suspended", "deactivated"],
)
def test_a_stream_ends_promptly_once_its_reader_may_no_longer_chat(client, world, turn, settings, change):
    settings.SSE_STREAM_MAX_SECONDS = STREAMING_FOR + 10
    body, ended_after, stalled = stream_while_access_changes(client, world, turn, change)
    assert ended_after - stalled < ENDS_WITHIN, (
        f"the stream went on for {ended_after:.1f} s after the change ({stalled:.1f} s of it with the process stalled)"
    )
    # Not the status check or the time limit, the next things that would have ended it.
    assert ended_after < views.STREAM_STATUS_CHECK_SECONDS
    assert len([kind for _, kind, _ in frames(body) if kind == "delta"]) < 5 * ENDS_WITHIN


@CHANGES
def test_a_reconnect_after_the_change_is_refused(client, world, turn, change):
    url = token_url(world, turn)
    change(world)
    client.force_login(world.a.member)
    assert client.get(events_url(turn)).status_code in (403, 404)
    assert client.get(url).status_code in (403, 404)
    assert views.signed_stream(scope(url)) is None  # the fast path does not open it either


def test_a_stream_token_made_before_a_deactivation_no_longer_opens_the_fast_path(world, turn):
    url = token_url(world, turn)
    deactivate(world)
    assert views.signed_stream(scope(url)) is None


def test_a_change_to_someone_else_leaves_a_stream_open(client, world, turn, settings):
    """Another member's removal makes open streams re-check, not end."""
    settings.SSE_STREAM_MAX_SECONDS = 4

    def remove_the_admin(world) -> None:
        with tenant_context(world.a.tenant):
            membership = Membership.objects.get(user=world.a.admin)
            tenant_services.remove_member(actor(world.a, "owner"), membership)

    body, _, _ = stream_while_access_changes(client, world, turn, remove_the_admin)
    assert len([kind for _, kind, _ in frames(body) if kind == "delta"]) >= 10  # went on to its time


def test_the_stream_token_of_a_deleted_conversation_no_longer_opens_the_fast_path(client, world, turn):
    url = token_url(world, turn)
    with tenant_context(world.a.tenant):
        turn.status = MessageStatus.DONE
        turn.save(update_fields=["status"])
        from agents import services as agent_services
        from agents.models import Conversation

        agent_services.delete_conversation(actor(world.a), Conversation.objects.get(pk=turn.conversation_id))
    client.force_login(world.a.member)
    assert client.get(url).status_code == 404
    assert views.signed_stream(scope(url)) is None
