"""A turn interrupted while it talks to the runtime: a dropped connection (retried, unless
the person pressed Stop), the soft time limit, a bug; or after it, in the output guardrails'
final check. Each ends once, with its one usage event for what it really used, its
reservation settled and its answer so far kept as the output guardrails leave it (none of
it when the check itself could not run)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from agents import runtime_gateway, services, turns
from agents.guardrails import backends, enforce
from agents.guardrails.models import GuardrailEvent
from agents.models import Invocation, Message
from agents.tasks import run_turn
from billing import accounting
from billing.models import ModelPrice, MonthlyUsage, PriceBook, Reservation, ReservationStatus, UsageEvent
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, run
from tests.guardrails.conftest import set_tier_policy
from tests.guardrails.test_bedrock import time_limit_during_apply_guardrail
from tests.guardrails.test_enforcement import _failing_bedrock, published_text

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


@pytest.mark.parametrize(
    "error, reason",
    [
        (SoftTimeLimitExceeded(), "The agent took too long to answer."),
        (KeyError("a bug in the worker"), "Something went wrong while answering. Try again."),
    ],
)
def test_it_bills_a_turn_the_worker_could_not_finish_for_what_it_used_and_keeps_its_answer(
    world, catalogue, runtime, error, reason
):
    book = PriceBook.objects.create(
        version=1, effective_from="2000-01-01T00:00:00Z", per_tool_call="0.5", per_runtime_second="0.01"
    )
    ModelPrice.objects.create(price_book=book, model_key="offline-small", per_1k_input=1, per_1k_output=1)
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)

    def generating():
        time.sleep(0.2)  # stands for minutes of generation
        return {"type": "delta", "text": " and more"}

    runtime.events = [
        {"type": "delta", "text": "A long answer"},
        {"type": "tool_call", "name": "search"},
        generating,
        error,  # raised where the worker waits for the runtime's next event
    ]
    assert run_turn.apply(args=[world.a.tenant.pk, str(invocation.pk)]).get() == "failed"

    turn, answer, [event], reservation, month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.content, answer.error) == (
        "failed",
        "failed",
        "A long answer and more",
        reason,
    )
    assert answer.tool_calls == [{"name": "search"}]
    tokens = (turns.estimate_tokens(QUESTION), turns.estimate_tokens("A long answer and more"))
    assert (event.outcome, (event.input_tokens, event.output_tokens), event.estimated) == ("failed", tokens, True)
    assert (event.tool_calls, event.runtime_seconds >= Decimal("0.2")) == (1, True)
    prices = accounting.Prices(1, Decimal(1), Decimal(1), Decimal("0.5"), Decimal("0.01"))
    assert event.cost == prices.cost(*tokens, 1, event.runtime_seconds)
    assert (reservation.status, month.tokens_reserved, month.cost_used) == (ReservationStatus.SETTLED, 0, event.cost)


# --- interrupted after the runtime answered: in the output guardrails' final check ------------


def broken_check(error):
    def final(guard, text):
        raise error

    return final


@pytest.mark.parametrize(
    "error, reason",
    [
        (SoftTimeLimitExceeded(), turns.TOOK_TOO_LONG),
        (KeyError("a bug in the check"), turns.WENT_WRONG),
    ],
)
def test_a_turn_interrupted_in_its_final_check_is_billed_for_what_the_runtime_used(
    world, catalogue, runtime, monkeypatch, error, reason
):
    monkeypatch.setattr(enforce.OutputGuard, "final", broken_check(error))
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)  # the runtime answers in full, 1200 + 300 tokens

    assert run_turn.apply(args=[world.a.tenant.pk, str(invocation.pk)]).get() == "failed"

    turn, answer, [event], reservation, month = ending(world.a, invocation)
    # None of the unchecked answer is stored; the usage is the runtime's.
    assert (turn.status, answer.status, answer.error, answer.content) == ("failed", "failed", reason, "")
    assert (event.outcome, event.input_tokens, event.output_tokens, event.estimated) == ("failed", 1200, 300, False)
    assert (turn.input_tokens, turn.output_tokens) == (1200, 300)
    assert (reservation.status, month.tokens_reserved, month.tokens_used) == (ReservationStatus.SETTLED, 0, 1500)
    published = published_text(world, turn)[1]
    assert (published[-1].kind, published[-1].data) == ("error", {"message": reason})
    with tenant_context(world.a.tenant):  # the conversation takes the next message
        services.post_message(actor(world.a), turn.conversation, "And for exchanges?")


# --- what a failed turn keeps of its answer: what the output guardrails leave of it -----------

# The ways a turn fails while its runtime answers, and the reason the person is given.
FAILURES = [
    pytest.param(
        runtime_gateway.TransientRuntimeError("connection refused"),
        "The agent runtime is unavailable. Try again in a moment.",
        id="runtime-unavailable-after-retries",
    ),
    pytest.param({"type": "error", "message": "Quota gone"}, "Quota gone", id="runtime-rejected"),
    pytest.param(SoftTimeLimitExceeded(), turns.TOOK_TOO_LONG, id="soft-time-limit"),
    pytest.param(KeyError("a bug in the worker"), turns.WENT_WRONG, id="bug"),
]
USAGE = {"type": "usage", "input_tokens": 1200, "output_tokens": 300}


def run_last_attempt(side, invocation) -> str:
    with tenant_context(side.tenant):
        return turns.run(side.tenant, str(invocation.pk), final_attempt=True)


def guardrail_events(side) -> list[tuple[str, str, str]]:
    with tenant_context(side.tenant):
        return list(GuardrailEvent.objects.order_by("id").values_list("stage", "category", "action"))


@pytest.mark.parametrize("failure, reason", FAILURES)
def test_a_failed_turn_stores_its_answer_so_far_redacted_as_it_was_shown(world, catalogue, runtime, failure, reason):
    set_tier_policy(world.a.tenant.tier, {"entities": {"phone": "redact"}})
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)
    runtime.events = [
        {"type": "delta", "text": "Call support on 555-20"},
        {"type": "delta", "text": "1-3344."},
        failure,
    ]

    assert run_last_attempt(world.a, invocation) == "failed"

    turn, answer, [event], reservation, _month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.error) == ("failed", "failed", reason)
    assert (answer.content, answer.blocked_by_guardrails) == ("Call support on [PHONE].", False)
    assert guardrail_events(world.a) == [("output", "pii", "redact")]
    # Billed for what the runtime generated (estimated: it reported no usage), not for the
    # redacted text; the final check is counted like any other.
    raw = "Call support on 555-201-3344."
    assert (event.outcome, event.output_tokens, event.estimated) == ("failed", turns.estimate_tokens(raw), True)
    assert event.guardrail_checks > turn.input_guardrail_checks
    assert reservation.status == ReservationStatus.SETTLED
    shown, published = published_text(world, turn)
    assert shown == answer.content  # the stream ends showing exactly what is stored
    assert not any("3344" in str(e.data) for e in published)
    assert (published[-1].kind, published[-1].data) == ("error", {"message": reason})


@pytest.mark.parametrize("failure, reason", FAILURES)
def test_a_failed_turn_whose_answer_so_far_is_blocked_stores_only_the_block_message(
    world, catalogue, runtime, failure, reason
):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"], "block_message": "Not here, please."})
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)
    runtime.events = [
        {"type": "delta", "text": "The plan is "},
        {"type": "delta", "text": "Project Nightingale."},
        USAGE,
        failure,
    ]

    assert run_last_attempt(world.a, invocation) == "failed"

    turn, answer, [event], _reservation, _month = ending(world.a, invocation)
    # Still a failure, for the reason it failed; what is kept of its answer is the enforced text.
    assert (turn.status, answer.status, answer.error) == ("failed", "failed", reason)
    # Shown as the guardrails' notice, not as answer text, by the page and the live stream alike.
    assert (answer.content, answer.blocked_by_guardrails) == ("Not here, please.", True)
    assert guardrail_events(world.a) == [("output", "blocked_term", "block")]
    assert (event.outcome, event.input_tokens, event.output_tokens) == ("failed", 1200, 300)
    shown, published = published_text(world, turn)
    assert shown == "Not here, please."
    assert ("replace", {"text": "Not here, please.", "blocked": True}) in [(e.kind, e.data) for e in published]
    assert not any("ightingale" in str(e.data) for e in published)
    assert (published[-1].kind, published[-1].data) == ("error", {"message": reason})


@pytest.mark.parametrize("failure, reason", FAILURES)
def test_a_guardrail_backend_error_in_a_failed_turns_final_check_fails_closed(
    world, catalogue, runtime, failure, reason
):
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)  # admitted by the built-in input checks
    set_tier_policy(
        world.a.tenant.tier, {"backend": "bedrock", "bedrock_guardrail_id": "gr-1", "failure_mode": "closed"}
    )
    _failing_bedrock()  # ApplyGuardrail answers 503 to the final check of the answer
    runtime.events = [{"type": "delta", "text": "The refund window "}, USAGE, failure]

    assert run_last_attempt(world.a, invocation) == "failed"

    turn, answer, [event], _reservation, _month = ending(world.a, invocation)
    withheld = "The answer was withheld by your organisation's guardrails."  # the default for an answer
    checks = [("output", "backend_error", "block")]
    if isinstance(failure, dict):  # the runtime's own message passes the output checks too: withheld
        reason, checks = enforce.WITHHELD_ERROR, checks * 2
    assert (turn.status, answer.error, answer.content) == ("failed", reason, withheld)
    assert answer.blocked_by_guardrails
    assert guardrail_events(world.a) == checks
    assert (event.input_tokens, event.output_tokens) == (1200, 300)


@pytest.mark.parametrize("failure, reason", FAILURES)
def test_a_failed_turn_whose_final_check_breaks_keeps_none_of_its_answer_and_its_reason(
    world, catalogue, runtime, monkeypatch, failure, reason
):
    monkeypatch.setattr(enforce.OutputGuard, "final", broken_check(RuntimeError("guardrail policy unreadable")))
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)
    runtime.events = [{"type": "delta", "text": "The refund window "}, USAGE, failure]

    assert run_last_attempt(world.a, invocation) == "failed"

    turn, answer, [event], reservation, _month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.error, answer.content) == ("failed", "failed", reason, "")
    assert (event.outcome, event.input_tokens, event.output_tokens) == ("failed", 1200, 300)
    assert reservation.status == ReservationStatus.SETTLED
    published = published_text(world, turn)[1]
    assert (published[-1].kind, published[-1].data) == ("error", {"message": reason})
    with tenant_context(world.a.tenant):  # the conversation takes the next message
        services.post_message(actor(world.a), turn.conversation, "And for exchanges?")


def test_a_stopped_turn_whose_runtime_connection_drops_stores_its_answer_so_far_redacted(world, catalogue, runtime):
    set_tier_policy(world.a.tenant.tier, {"entities": {"phone": "redact"}})
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)

    def press_stop():
        with tenant_context(world.a.tenant):
            services.cancel_turn(actor(world.a), Invocation.objects.get(pk=invocation.pk))
        return {"type": "delta", "text": "1-3344."}

    runtime.events = [
        {"type": "delta", "text": "Call support on 555-20"},
        press_stop,
        runtime_gateway.TransientRuntimeError("connection reset"),
    ]
    assert run(world.a, invocation) == "cancelled"

    turn, answer, [event], _reservation, _month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.content) == ("cancelled", "cancelled", "Call support on [PHONE].")
    assert event.output_tokens == turns.estimate_tokens("Call support on 555-201-3344.")
    shown, published = published_text(world, turn)
    assert shown == answer.content
    assert not any("3344" in str(e.data) for e in published)


@pytest.mark.parametrize("failure_mode", ["closed", "open"])
def test_the_soft_time_limit_in_a_bedrock_final_check_interrupts_the_turn(world, catalogue, runtime, failure_mode):
    """Not a backend error, which would block the answer (closed) or let it through unchecked
    (open): the turn is cut short, as anywhere else, billed and keeping none of its answer."""
    invocation = ask(world.a, catalogue.helpdesk, QUESTION)  # admitted by the built-in input checks
    set_tier_policy(
        world.a.tenant.tier, {"backend": "bedrock", "bedrock_guardrail_id": "gr-1", "failure_mode": failure_mode}
    )
    backends.set_client(time_limit_during_apply_guardrail())
    # No citation: it would be checked (by Bedrock) before the answer's final check.
    runtime.events = [event for event in runtime.events if event["type"] != "citation"]

    assert run_turn.apply(args=[world.a.tenant.pk, str(invocation.pk)]).get() == "failed"

    turn, answer, [event], reservation, _month = ending(world.a, invocation)
    assert (turn.status, answer.status, answer.error, answer.content) == ("failed", "failed", turns.TOOK_TOO_LONG, "")
    assert guardrail_events(world.a) == []  # no backend_error verdict
    assert (event.outcome, event.input_tokens, event.output_tokens) == ("failed", 1200, 300)
    assert reservation.status == ReservationStatus.SETTLED
    published = published_text(world, turn)[1]
    assert (published[-1].kind, published[-1].data) == ("error", {"message": turns.TOOK_TOO_LONG})
