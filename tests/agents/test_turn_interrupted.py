"""A turn interrupted while it talks to the runtime: a dropped connection (retried, unless
the person pressed Stop). Each ends once, with its one usage event for what it really
used, its reservation settled and its answer so far kept."""

from __future__ import annotations

import pytest

from agents import runtime_gateway, services, turns
from agents.models import Invocation, Message
from billing import accounting
from billing.models import MonthlyUsage, Reservation, ReservationStatus, UsageEvent
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, run

pytestmark = pytest.mark.django_db

QUESTION = "What is the refund window?"


def ending(side, invocation):
    """The turn, its stored answer, its usage events, its reservation and the tenant's month."""
    with tenant_context(side.tenant):
        turn = Invocation.objects.get(pk=invocation.pk)
        answer = Message.objects.get(pk=turn.assistant_message_id)
        events = list(UsageEvent.objects.filter(invocation_id=turn.pk))
        reservation = Reservation.objects.get(invocation_id=turn.pk)
        month = MonthlyUsage.objects.get(month=accounting.month_start(), user_key=0)
    return turn, answer, events, reservation, month


@pytest.mark.parametrize("final_attempt", [False, True])
def test_it_cancels_a_stopped_turn_whose_runtime_connection_drops_and_bills_what_it_used(
    world, catalogue, runtime, final_attempt
):
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)

    def press_stop():
        with tenant_context(world.a.tenant):
            services.cancel_turn(actor(world.a), Invocation.objects.get(pk=invocation.pk))
        return {"type": "tool_call", "name": "lookup_policy"}

    runtime.events = [
        {"type": "delta", "text": "The refund window "},
        press_stop,  # before the worker's next look at cancel_requested
        runtime_gateway.TransientRuntimeError("connection reset"),
    ]
    with tenant_context(world.a.tenant):
        # Not put back for a retry (RetryLater): no retry could claim a stopped turn.
        assert turns.run(world.a.tenant, str(invocation.pk), final_attempt=final_attempt) == "cancelled"

    turn, answer, events, reservation, month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.content) == ("cancelled", "cancelled", "The refund window ")
    assert [(e.outcome, e.output_tokens, e.input_tokens, e.tool_calls) for e in events] == [
        ("cancelled", turns.estimate_tokens("The refund window "), turns.estimate_tokens(QUESTION), 1)
    ]
    assert (reservation.status, month.tokens_reserved, month.cost_reserved) == (ReservationStatus.SETTLED, 0, 0)
    with tenant_context(world.a.tenant):  # the conversation takes the next message
        services.post_message(actor(world.a), turn.conversation, "And for exchanges?")


def test_it_cancels_a_turn_stopped_while_it_waited_for_its_retry(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    runtime.events = [runtime_gateway.TransientRuntimeError("502 from the runtime")]
    with pytest.raises(turns.RetryLater), tenant_context(world.a.tenant):
        turns.run(world.a.tenant, str(invocation.pk))
    with tenant_context(world.a.tenant):  # Stop pressed as the turn went back to the queue
        Invocation.objects.filter(pk=invocation.pk).update(cancel_requested=True)

    assert run(world.a, invocation) == "cancelled"  # the retry's delivery

    turn, answer, events, reservation, month = ending(world.a, invocation)
    assert (turn.status, answer.status) == ("cancelled", "cancelled")
    assert [(e.outcome, e.input_tokens + e.output_tokens) for e in events] == [("cancelled", 0)]
    assert (reservation.status, month.tokens_reserved) == (ReservationStatus.SETTLED, 0)
    assert len(runtime.calls) == 1  # the runtime was not called again
    assert run(world.a, invocation) == "cancelled"  # a duplicate delivery changes nothing
    assert len(ending(world.a, invocation)[2]) == 1
