"""Metering: every turn priced from the price book in force, rolled up in the same
transaction, its reservation settled; replays change nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from agents import turns
from agents.guardrails import enforce
from agents.models import Invocation
from billing import accounting, spend
from billing.models import (
    ModelPrice,
    MonthlyUsage,
    PriceBook,
    Reservation,
    TenantBudget,
    UsageDaily,
    UsageEvent,
)
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.billing.helpers import ask, ask_and_run, run

pytestmark = pytest.mark.django_db


def price_book(version: int, *, input_price: str, output_price: str, tool: str = "0", runtime: str = "0", ago=1):
    book = PriceBook.objects.create(
        version=version,
        effective_from=timezone.now() - dt.timedelta(days=ago),
        per_tool_call=Decimal(tool),
        per_runtime_second=Decimal(runtime),
    )
    ModelPrice.objects.create(
        price_book=book,
        model_key="offline-small",
        per_1k_input=Decimal(input_price),
        per_1k_output=Decimal(output_price),
    )
    return book


def rollup_sums(side) -> dict:
    with tenant_context(side.tenant):
        return accounting.rollup_totals()


def test_a_turn_is_priced_from_the_book_in_force_and_records_its_version(world, catalogue, runtime):
    price_book(1, input_price="0.5", output_price="0.5", ago=30)
    price_book(2, input_price="0.010", output_price="0.020", tool="0.05", ago=1)  # in force now
    price_book(3, input_price="9", output_price="9", ago=-5)  # not yet in force
    runtime.events = [
        {"type": "delta", "text": "Thirty days."},
        {"type": "tool_call", "name": "lookup", "input": {}},
        {"type": "usage", "input_tokens": 1200, "output_tokens": 300},
    ]
    invocation = ask_and_run(world.a, catalogue.helpdesk)

    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get()
        daily = UsageDaily.objects.get()
        month = MonthlyUsage.objects.get(user_key=0)
        reservation = Reservation.objects.get(invocation_id=invocation.pk)
    # 1.2k × 0.010 + 0.3k × 0.020 + 1 tool call × 0.05 (+ runtime seconds × 0)
    assert event.cost == Decimal("0.06800000")
    assert event.price_book_version == 2
    assert (event.input_tokens, event.output_tokens, event.tool_calls, event.outcome) == (1200, 300, 1, "done")
    assert event.latency_ms is not None
    assert (daily.turns, daily.input_tokens, daily.output_tokens, daily.tool_calls) == (1, 1200, 300, 1)
    assert daily.cost == event.cost
    assert daily.user_key == world.a.member.pk and daily.agent_slug == "helpdesk"
    assert sum(getattr(daily, f) for f in ("lat_le_250", "lat_le_500", "lat_le_1000", "lat_gt_30000")) == 1
    # The reservation (estimate incl. 1024 output tokens) is replaced by the real usage.
    assert reservation.status == "settled" and reservation.tokens > 1024
    assert (month.tokens_used, month.tokens_reserved, month.cost_reserved) == (1500, 0, 0)
    assert month.cost_used == event.cost


def test_without_a_price_book_the_catalogue_prices_apply_as_version_0(world, catalogue, runtime):
    ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get()
    # catalogue: 0.001 / 0.002 per 1k → 1.2 × 0.001 + 0.3 × 0.002
    assert (event.cost, event.price_book_version) == (Decimal("0.00180000"), 0)


def test_a_model_the_book_does_not_list_pays_the_books_tool_and_runtime_prices(world, catalogue, runtime):
    book = PriceBook.objects.create(
        version=1,
        effective_from=timezone.now() - dt.timedelta(days=1),
        per_tool_call=Decimal("0.50"),
        per_runtime_second=Decimal("0.01"),
    )
    ModelPrice.objects.create(price_book=book, model_key="some-other-model", per_1k_input=1, per_1k_output=1)
    runtime.events = [
        {"type": "delta", "text": "ok"},
        {"type": "tool_call", "name": "a"},
        {"type": "tool_call", "name": "b"},
        {"type": "usage", "input_tokens": 1000, "output_tokens": 0},
    ]
    ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get()
    # catalogue tokens (1k × 0.001) + the book's 2 tool calls × 0.50 + runtime seconds × 0.01
    expected = Decimal("0.001") + 2 * Decimal("0.50") + event.runtime_seconds * Decimal("0.01")
    assert (event.cost, event.price_book_version) == (expected.quantize(accounting.COST_QUANTUM), 1)
    assert accounting.prices_for("offline-small", catalogue.offering) == accounting.Prices(
        1, Decimal("0.001"), Decimal("0.002"), Decimal("0.50"), Decimal("0.01")
    )


def test_replaying_a_finished_turn_leaves_every_sum_unchanged(world, catalogue, runtime):
    invocation = ask_and_run(world.a, catalogue.helpdesk)
    before = rollup_sums(world.a)
    with tenant_context(world.a.tenant):
        month_before = list(MonthlyUsage.objects.order_by("user_key").values())
    for _ in range(5):
        # A redelivered task finds the turn final and does nothing…
        assert run(world.a, invocation) == "done"
        # …and even a forced second finish/record cannot bill twice.
        with tenant_context(world.a.tenant):
            fresh = Invocation.objects.select_related("agent").get(pk=invocation.pk)
            turns._finish(fresh, "again", "done", {"input_tokens": 999, "output_tokens": 999}, [], [], 0)
            from billing import metering

            assert (
                metering.record_turn(
                    fresh,
                    outcome="done",
                    offering=catalogue.offering,
                    input_tokens=5,
                    output_tokens=5,
                    tool_calls=0,
                    runtime_seconds=Decimal("1"),
                    estimated=False,
                )
                is None
            )
    with tenant_context(world.a.tenant):
        assert UsageEvent.objects.count() == 1
        assert list(MonthlyUsage.objects.order_by("user_key").values()) == month_before
    assert rollup_sums(world.a) == before


def test_a_failed_turn_gives_its_reservation_back(world, catalogue, runtime):
    from agents.runtime_gateway import RuntimeRejected

    runtime.events = [RuntimeRejected("model refused")]
    invocation = ask(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        held = MonthlyUsage.objects.get(user_key=0)
    assert held.tokens_reserved > 0 and held.cost_reserved > 0
    run(world.a, invocation)
    with tenant_context(world.a.tenant):
        after = MonthlyUsage.objects.get(user_key=0)
        event = UsageEvent.objects.get()
        daily = UsageDaily.objects.get()
    assert (after.tokens_reserved, after.cost_reserved, after.tokens_used) == (0, 0, 0)
    assert (event.outcome, event.input_tokens, event.output_tokens) == ("failed", 0, 0)
    assert (daily.turns, daily.failed_turns) == (1, 1)


def test_a_turn_blocked_at_the_input_counts_as_a_blocked_turn_with_no_usage(world, catalogue, runtime, monkeypatch):
    monkeypatch.setattr(
        "agents.guardrails.enforce.screen_input",
        lambda tenant, user, text: enforce.InputVerdict(
            text="[blocked]", blocked=True, message="Not allowed.", checks=3
        ),
    )
    invocation = ask(world.a, catalogue.helpdesk, "my card is 4111 1111 1111 1111")
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get(invocation_id=invocation.pk)
        daily = UsageDaily.objects.get()
        month = MonthlyUsage.objects.get(user_key=0)
    assert (event.outcome, event.input_tokens + event.output_tokens, event.cost) == ("blocked", 0, 0)
    assert event.guardrail_checks == 3 and event.latency_ms is None
    assert (daily.turns, daily.blocked_turns, daily.guardrail_checks, daily.lat_le_250) == (1, 1, 3, 0)
    assert (month.tokens_reserved, month.cost_reserved) == (0, 0)
    assert runtime.calls == []


def test_crossing_the_soft_alert_threshold_of_the_bill_alerts_once_a_month(world, catalogue, runtime):
    # The bill: a $100 fee with 1,000 tokens included, then $10 per 1k tokens. A turn here
    # uses 1,500 tokens ($5.00 of overage for the first, $15.00 for each after).
    tier = world.a.tenant.tier
    tier.monthly_price, tier.included_tokens, tier.overage_price_per_1k_tokens = Decimal("100"), 1000, Decimal("10")
    tier.save()
    # The price book's cost of a turn is 1,000× smaller ($0.015): a threshold on cost is never crossed.
    price_book(1, input_price="0.01", output_price="0.01")
    with tenant_context(world.a.tenant):
        # Alert at the fee plus 80 % of the $25 above it: $120.
        TenantBudget.objects.create(monthly_budget=Decimal("125.00"), soft_alert_percent=80)
    ask_and_run(world.a, catalogue.helpdesk)  # billed $105.00: under 80 %
    with tenant_context(world.a.tenant):
        assert not AuditLog.objects.filter(action="billing.budget_soft_alert").exists()
    ask_and_run(world.a, catalogue.helpdesk)  # $120.00: crosses 80 %
    with tenant_context(world.a.tenant):
        alerts = list(AuditLog.objects.filter(action="billing.budget_soft_alert"))
        budget = TenantBudget.objects.get()
        month = MonthlyUsage.objects.get(user_key=0)
    assert len(alerts) == 1
    assert alerts[0].after == {
        "month": accounting.month_start().isoformat(),
        "bill_so_far": "120.00",
        "plan_fee": "100.00",
        "token_overage": "20.00",
        "tokens_used": 3000,
        "threshold_percent": 80,
        "monthly_budget": "125.00",
    }
    assert month.cost_used < Decimal("0.05")  # the cost stays recorded, for the operators
    assert budget.alerted_month == accounting.month_start()
    with tenant_context(world.a.tenant):
        TenantBudget.objects.update(monthly_budget=Decimal("200.00"))
    ask_and_run(world.a, catalogue.helpdesk)  # $135.00: already alerted this month
    with tenant_context(world.a.tenant):
        assert AuditLog.objects.filter(action="billing.budget_soft_alert").count() == 1


def test_it_does_not_raise_the_soft_alert_on_the_months_first_turn_when_the_budget_is_just_above_the_fee(
    world, catalogue, runtime
):
    # $100 fee, 1,000 tokens included, then $10 per 1k: the first turn bills $105.00.
    tier = world.a.tenant.tier
    tier.monthly_price, tier.included_tokens, tier.overage_price_per_1k_tokens = Decimal("100"), 1000, Decimal("10")
    tier.save()
    with tenant_context(world.a.tenant):
        # 80 % of the whole budget ($88) is below the fee owed from day one; the alert is at
        # the fee plus 80 % of the $10 above it: $108.00.
        TenantBudget.objects.create(monthly_budget=Decimal("110.00"), soft_alert_percent=80)
    ask_and_run(world.a, catalogue.helpdesk)  # $105.00
    with tenant_context(world.a.tenant):
        assert not AuditLog.objects.filter(action="billing.budget_soft_alert").exists()
        assert not spend.month_spend(world.a.tenant).alert_reached


def test_usage_events_refuse_updates_and_deletes(world, catalogue, runtime):
    ask_and_run(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        event = UsageEvent.objects.get()
        with pytest.raises(ValueError):
            event.save()
        with pytest.raises(ValueError):
            event.delete()


def test_latency_percentiles_come_from_the_histogram():
    buckets = {"lat_le_250": 50, "lat_le_500": 40, "lat_le_1000": 10}
    assert accounting.latency_percentile(buckets, 50) == 250
    assert 250 < accounting.latency_percentile(buckets, 95) <= 1000
    assert accounting.latency_percentile({}, 50) is None
