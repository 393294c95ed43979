"""Turns no worker will finish are failed by the beat sweeper, not left blocking the conversation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents import runtime_gateway, turns
from agents.models import Invocation, Message, MessageStatus
from agents.tasks import TURN_TIME_LIMIT, fail_stuck_turns
from billing.models import UsageEvent
from tenants.context import tenant_context
from tests.agents.helpers import make_turn
from tests.billing.helpers import ask


def _turn(side, agent, status, **times):
    _, answer, invocation = make_turn(side.tenant, side.member, agent, answer="", status=status)
    with tenant_context(side.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(**times)
    return invocation


def _state(side, invocation):
    with tenant_context(side.tenant):
        invocation = Invocation.objects.get(pk=invocation.pk)
        message = Message.objects.get(pk=invocation.assistant_message_id)
        events = UsageEvent.objects.filter(invocation_id=invocation.pk).count()
    return invocation, message, events


def test_it_fails_turns_left_running_or_queued_too_long_in_every_tenant_and_bills_each_once(world, catalogue, settings):
    now = timezone.now()
    long_ago = now - timedelta(seconds=TURN_TIME_LIMIT + 120)
    settings.TURN_QUEUED_MAX_SECONDS = 600
    a_agent = b_agent = catalogue.helpdesk  # shared, enabled in both tenants
    dead_worker = _turn(world.a, a_agent, MessageStatus.STREAMING, started_at=long_ago)
    lost_task = _turn(world.b, b_agent, MessageStatus.QUEUED, queued_at=now - timedelta(seconds=700))
    still_running = _turn(world.a, a_agent, MessageStatus.RUNNING, started_at=now - timedelta(seconds=30))
    just_queued = _turn(world.b, b_agent, MessageStatus.QUEUED, queued_at=now - timedelta(seconds=60))

    assert fail_stuck_turns() == 2

    invocation, message, events = _state(world.a, dead_worker)
    assert (invocation.status, message.status, events) == (MessageStatus.FAILED, MessageStatus.FAILED, 1)
    assert message.error == "The agent stopped answering. Try again."
    invocation, message, events = _state(world.b, lost_task)
    assert (invocation.status, message.status, events) == (MessageStatus.FAILED, MessageStatus.FAILED, 1)
    assert "waited too long" in message.error
    assert _state(world.a, still_running)[0].status == MessageStatus.RUNNING
    assert _state(world.b, just_queued)[0].status == MessageStatus.QUEUED

    # A second sweep finds nothing and bills nothing again.
    assert fail_stuck_turns() == 0
    assert _state(world.a, dead_worker)[2] == 1


def test_a_turn_of_a_tenant_suspended_while_it_waited_fails_at_its_claim_and_is_billed_once(world, catalogue, runtime):
    from tenants.models import Tenant, TenantStatus
    from tests.billing.helpers import ask, run

    invocation = ask(world.a, catalogue.helpdesk)
    stale = Tenant.objects.get(pk=world.a.tenant.pk)  # what the worker's short cache may still hold
    Tenant.objects.filter(pk=stale.pk).update(status=TenantStatus.SUSPENDED)
    world.a.tenant = stale
    assert run(world.a, invocation) == "failed"
    assert runtime.calls == []  # the runtime was never called
    with tenant_context(world.a.tenant):
        turn = Invocation.objects.get(pk=invocation.pk)
        assert turn.status == MessageStatus.FAILED and "suspended" in turn.error
        assert Message.objects.get(pk=turn.assistant_message_id).status == MessageStatus.FAILED
        assert UsageEvent.objects.filter(invocation_id=turn.pk).count() == 1


def test_it_leaves_a_turn_waiting_for_its_retry_until_it_has_waited_too_long_since_its_last_attempt(
    world, catalogue, runtime, settings
):
    invocation = ask(world.a, catalogue.helpdesk)
    runtime.events = [runtime_gateway.TransientRuntimeError("502 from the runtime")]
    with pytest.raises(turns.RetryLater), tenant_context(world.a.tenant):
        turns.run(world.a.tenant, str(invocation.pk))  # back to the queue, retry due in 1 s
    waited = timezone.now() - timedelta(seconds=settings.TURN_QUEUED_MAX_SECONDS + 30)
    with tenant_context(world.a.tenant):  # it had waited long in a busy queue before its attempt
        Invocation.objects.filter(pk=invocation.pk).update(queued_at=waited)

    assert fail_stuck_turns() == 0
    assert _state(world.a, invocation)[0].status == MessageStatus.QUEUED

    with tenant_context(world.a.tenant):  # its retry's task was lost
        Invocation.objects.filter(pk=invocation.pk).update(started_at=waited)
    assert fail_stuck_turns() == 1
    invocation, message, events = _state(world.a, invocation)
    assert (invocation.status, message.status, events) == (MessageStatus.FAILED, MessageStatus.FAILED, 1)
