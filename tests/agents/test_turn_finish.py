"""A turn's finish as the worker runs it, outside any transaction of the caller's (as in
production: these tests commit, transaction=True).

On PostgreSQL the finish is one query string: final state, answer, usage event, roll-up,
the reservation's settlement and the month counters, one round trip and one implicit
transaction, priced by the book in force at the finish (from the claim's reading while
that is still the book in force). On SQLite it is the transaction it always was. Both
must leave the same rows behind."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import runtime_gateway, services, streaming, turns
from agents.models import Invocation, Message, MessageStatus
from agents.tasks import run_turn
from billing import accounting
from billing.models import ModelPrice, MonthlyUsage, PriceBook, Reservation, ReservationStatus, UsageDaily, UsageEvent
from tenants.context import tenant_context
from tests.agents.helpers import ANSWER
from tests.billing.helpers import actor, ask, run

pytestmark = pytest.mark.django_db(transaction=True)


def book(version: int, per_1k: str, effective_from) -> PriceBook:
    price_book = PriceBook.objects.create(version=version, effective_from=effective_from)
    ModelPrice.objects.create(
        price_book=price_book, model_key="offline-small", per_1k_input=per_1k, per_1k_output=per_1k
    )
    return price_book


def month_rows(tenant) -> dict[int, MonthlyUsage]:
    with tenant_context(tenant):
        return {row.user_key: row for row in MonthlyUsage.objects.filter(month=accounting.month_start())}


def test_a_finished_turn_leaves_its_answer_one_event_and_settled_counters(world, catalogue, runtime):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    invocation = ask(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        reserved = Reservation.objects.get(invocation_id=invocation.pk)
    assert month_rows(world.a.tenant)[0].tokens_reserved == reserved.tokens

    assert run(world.a, invocation) == "done"

    with tenant_context(world.a.tenant):
        invocation.refresh_from_db()
        answer = Message.objects.get(pk=invocation.assistant_message_id)
        event = UsageEvent.objects.get(invocation_id=invocation.pk)
        daily = UsageDaily.objects.get(user_key=invocation.user_id)
        reservation = Reservation.objects.get(invocation_id=invocation.pk)
    assert invocation.status == MessageStatus.DONE and invocation.finished_at is not None
    assert answer.status == MessageStatus.DONE and answer.content == "".join(ANSWER)
    tokens = invocation.input_tokens + invocation.output_tokens
    assert tokens > 0
    assert (event.input_tokens + event.output_tokens, event.price_book_version) == (tokens, 1)
    assert event.cost == (Decimal(tokens) / 1000).quantize(accounting.COST_QUANTUM)
    assert (daily.turns, daily.cost) == (1, event.cost)
    assert reservation.status == ReservationStatus.SETTLED
    rows = month_rows(world.a.tenant)
    for key in (0, invocation.user_id):  # the tenant's row and the person's
        assert (rows[key].tokens_used, rows[key].tokens_reserved) == (tokens, 0)
        assert (rows[key].cost_used, rows[key].cost_reserved) == (event.cost, 0)


def test_finishing_again_changes_nothing(world, catalogue, runtime):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    invocation = ask(world.a, catalogue.helpdesk)
    run(world.a, invocation)
    before = {key: (r.tokens_used, r.tokens_reserved, r.cost_used) for key, r in month_rows(world.a.tenant).items()}
    with tenant_context(world.a.tenant):
        done = Invocation.objects.select_related("agent").get(pk=invocation.pk)
        # A late duplicate (a redelivered task's finish, the stuck-turn sweeper's fail).
        assert turns._finish(done, "Other text", MessageStatus.FAILED, {}, [], [], time.monotonic()) is None
        assert Message.objects.get(pk=done.assistant_message_id).status == MessageStatus.DONE
        assert UsageEvent.objects.filter(invocation_id=done.pk).count() == 1
        assert UsageDaily.objects.get(user_key=done.user_id).turns == 1
    after = {key: (r.tokens_used, r.tokens_reserved, r.cost_used) for key, r in month_rows(world.a.tenant).items()}
    assert after == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="round trips: PostgreSQL")
def test_on_postgresql_the_finish_is_one_statement(world, catalogue, runtime, monkeypatch):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    invocation = ask(world.a, catalogue.helpdesk)
    finishes = []
    original = turns._finish

    def counted(*args, **kwargs):
        with CaptureQueriesContext(connection) as queries:
            result = original(*args, **kwargs)
        finishes.append([q["sql"] for q in queries.captured_queries])
        return result

    monkeypatch.setattr(turns, "_finish", counted)
    assert run(world.a, invocation) == "done"
    assert len(finishes) == 1
    assert len(finishes[0]) == 1, finishes[0]  # one query string: no BEGIN, no COMMIT, no price lookup


def test_a_price_book_that_takes_effect_during_the_turn_prices_it(world, catalogue, runtime, monkeypatch):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    book(2, "2.00", timezone.now() + dt.timedelta(seconds=0.3))  # after the claim, before the finish
    invocation = ask(world.a, catalogue.helpdesk)
    claim = turns._claim

    def claim_then_wait(*args, **kwargs):
        claimed = claim(*args, **kwargs)
        time.sleep(0.4)
        return claimed

    monkeypatch.setattr(turns, "_claim", claim_then_wait)
    assert run(world.a, invocation) == "done"
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get(invocation_id=invocation.pk)
    tokens = event.input_tokens + event.output_tokens
    assert event.price_book_version == 2
    assert event.cost == (Decimal(tokens) * 2 / 1000).quantize(accounting.COST_QUANTUM)
    assert month_rows(world.a.tenant)[0].cost_used == event.cost


@pytest.mark.parametrize("backdated", [dt.timedelta(0), dt.timedelta(hours=1)])
def test_it_prices_a_turn_by_a_book_published_after_its_claim(world, catalogue, runtime, backdated):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    invocation = ask(world.a, catalogue.helpdesk)

    def operator_publishes_v2():  # while the answer streams: in force at once, or since an hour ago
        book(2, "2.00", timezone.now() - backdated)
        return {"type": "delta", "text": " (more)"}

    runtime.events = [
        {"type": "delta", "text": "The refund window "},
        operator_publishes_v2,
        {"type": "usage", "input_tokens": 1200, "output_tokens": 300},
    ]
    assert run(world.a, invocation) == "done"
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get(invocation_id=invocation.pk)
    assert event.price_book_version == accounting.price_book_at(event.created_at).version == 2
    assert event.cost == Decimal("3.00000000")
    assert month_rows(world.a.tenant)[0].cost_used == event.cost


def test_a_turn_reserved_last_month_gives_that_month_its_reservation_back(world, catalogue, runtime):
    book(1, "1.00", timezone.now() - dt.timedelta(days=60))
    invocation = ask(world.a, catalogue.helpdesk)
    this_month = accounting.month_start()
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    with tenant_context(world.a.tenant):
        # As if the turn had been admitted before midnight at the month's end.
        reservation = Reservation.objects.get(invocation_id=invocation.pk)
        MonthlyUsage.objects.filter(month=this_month).update(month=last_month)
        Reservation.objects.filter(pk=reservation.pk).update(month=last_month)
    assert run(world.a, invocation) == "done"
    with tenant_context(world.a.tenant):
        last = {r.user_key: r for r in MonthlyUsage.objects.filter(month=last_month)}
        now = {r.user_key: r for r in MonthlyUsage.objects.filter(month=this_month)}
        event = UsageEvent.objects.get(invocation_id=invocation.pk)
    tokens = event.input_tokens + event.output_tokens
    for key in (0, invocation.user_id):
        assert (last[key].tokens_reserved, last[key].cost_reserved, last[key].tokens_used) == (0, 0, 0)
        assert (now[key].tokens_used, now[key].tokens_reserved, now[key].cost_used) == (tokens, 0, event.cost)


def interrupted_once(monkeypatch, *, after_commit: bool) -> None:
    """The soft time limit strikes during the turn's first finish: before it writes anything,
    or once it has committed (and before the worker could say so to the browser)."""
    finish = turns._finish
    calls = []

    def finish_interrupted_once(*args, **kwargs):
        calls.append(args[2])
        if len(calls) > 1:
            return finish(*args, **kwargs)
        if after_commit:
            finish(*args, **kwargs)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(turns, "_finish", finish_interrupted_once)


@pytest.mark.parametrize(
    "after_commit, status, error, content, final_event",
    [
        (False, "failed", turns.TOOK_TOO_LONG, "", "error"),  # the turn ends failed, billed once
        (True, "done", "", "".join(ANSWER), "done"),  # it had ended: nothing more written or billed
    ],
)
def test_a_soft_time_limit_in_the_finish_bills_the_turn_exactly_once(
    world, catalogue, runtime, monkeypatch, after_commit, status, error, content, final_event
):
    book(1, "1.00", timezone.now() - dt.timedelta(days=1))
    invocation = ask(world.a, catalogue.helpdesk)  # the runtime answers in full, 1200 + 300 tokens
    interrupted_once(monkeypatch, after_commit=after_commit)

    assert run_turn.apply(args=[world.a.tenant.pk, str(invocation.pk)]).get() == status

    with tenant_context(world.a.tenant):
        turn = Invocation.objects.get(pk=invocation.pk)
        answer = Message.objects.get(pk=turn.assistant_message_id)
        events = list(UsageEvent.objects.filter(invocation_id=turn.pk))
        reservation = Reservation.objects.get(invocation_id=turn.pk)
        published = streaming.read(turn.pk, 0)
    assert (turn.status, answer.status, answer.error, answer.content) == (status, status, error, content)
    assert [(e.outcome, e.input_tokens, e.output_tokens) for e in events] == [(status, 1200, 300)]
    assert reservation.status == ReservationStatus.SETTLED
    assert (month_rows(world.a.tenant)[0].tokens_used, month_rows(world.a.tenant)[0].tokens_reserved) == (1500, 0)
    assert published[-1].kind == final_event  # the browser is told the turn has ended
    with tenant_context(world.a.tenant):  # the conversation takes the next message
        services.post_message(actor(world.a), turn.conversation, "And for exchanges?")


class NulSending:
    """A runtime whose answer, tool call and citation (or error) carry NUL characters."""

    name = "nul-sending"

    def __init__(self, failing: bool = False):
        self.failing = failing

    def invoke(self, request, context):
        from agents.runtime.contract import Citation, Delta, Done, Error, ToolCall, Usage

        if self.failing:
            return iter([Delta(text="Refunds\x00 take "), Error(code="bad", message="Quota\x00 gone", retryable=False)])
        return iter(
            [
                Delta(text="Refunds\x00 take "),
                ToolCall(name="look\x00up", input={"q\x00": ["a\x00b", {"n": "c\x00"}]}, id="t\x001"),
                Delta(text="30 days."),
                Citation(passage_id="p\x001", title="Re\x00funds", source="refunds\x00.md", index=1),
                Usage(input_tokens=3, output_tokens=2),
                Done(),
            ]
        )


def test_a_runtime_answer_with_nul_characters_is_stored_and_billed_without_them(world, catalogue, monkeypatch):
    # PostgreSQL cannot store U+0000: the finish, with the usage event in it, failed there.
    monkeypatch.setattr(runtime_gateway, "client_for", lambda kind, tenant: NulSending())
    invocation = ask(world.a, catalogue.helpdesk, "How long do refunds take?")
    assert run(world.a, invocation) == "done"
    with tenant_context(world.a.tenant):
        answer = Message.objects.get(pk=Invocation.objects.get(pk=invocation.pk).assistant_message_id)
        events = list(
            UsageEvent.objects.filter(invocation_id=invocation.pk).values_list("input_tokens", "output_tokens")
        )
    assert answer.content == "Refunds take 30 days."
    assert answer.tool_calls == [{"name": "lookup", "input": {"q": ["ab", {"n": "c"}]}, "id": "t1"}]
    assert answer.citations == [{"passage_id": "p1", "title": "Refunds", "source": "refunds.md", "index": 1}]
    assert events == [(3, 2)]


def test_a_runtime_error_with_nul_characters_fails_the_turn_with_its_reason(world, catalogue, monkeypatch):
    monkeypatch.setattr(runtime_gateway, "client_for", lambda kind, tenant: NulSending(failing=True))
    invocation = ask(world.a, catalogue.helpdesk)
    assert run(world.a, invocation) == "failed"
    with tenant_context(world.a.tenant):
        failed = Invocation.objects.get(pk=invocation.pk)
        answer = Message.objects.get(pk=failed.assistant_message_id)
        assert UsageEvent.objects.filter(invocation_id=invocation.pk).count() == 1
    assert (failed.error, answer.content, answer.status) == ("Quota gone", "Refunds take ", MessageStatus.FAILED)
