"""Recording what a turn used: the one usage event per invocation.

`record_turn()` is called by agents.turns._finish inside the transaction that
writes the turn's final status, so everything below commits (or not) together
with that status:

1. the usage event, priced from the price book in force (Decimal), recording
   the book's version — unique per (invocation, kind), so a redelivered or
   replayed task finds it already there and changes nothing else;
2. the daily roll-up row, added to with one INSERT … ON CONFLICT DO UPDATE
   SET x = x + n statement (atomic on PostgreSQL and SQLite alike);
3. the month-to-date counters: the turn's reservation (taken by
   billing.limits at admission) is replaced by its real tokens and cost;
4. the budget soft alert, once a month, when spend crosses the threshold.

Every invocation gets exactly one `agent_turn` event, whatever its outcome:
turns blocked by the input guardrails (never queued) and turns cancelled while
still queued are recorded with zero tokens by `record_unrun_turn()`, so
`turns` in the roll-ups counts every turn a person asked for.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing import accounting
from billing.models import (
    LATENCY_BUCKET_FIELDS,
    MonthlyUsage,
    Reservation,
    ReservationStatus,
    TenantBudget,
    UsageDaily,
    UsageEvent,
    UsageKind,
    latency_bucket_field,
)

log = logging.getLogger(__name__)


def turn_cost(offering, input_tokens: int, output_tokens: int) -> Decimal:
    """Catalogue list-price cost of tokens alone (kept for callers that estimate)."""
    if offering is None:
        return Decimal("0")
    return accounting.Prices(0, offering.price_per_1k_input, offering.price_per_1k_output).cost(
        input_tokens, output_tokens
    )


def upsert_add(model, keys: dict, increments: dict) -> None:
    """INSERT the row, or add `increments` to the existing one — one statement.

    `keys` must be the columns of a unique constraint of `model`. Both
    PostgreSQL and SQLite (≥ 3.24) take ON CONFLICT … DO UPDATE; concurrent
    callers serialise on the row, so no increment is ever lost or doubled.
    The caller is in the tenant's context (RLS checks tenant_id on PostgreSQL)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = {**keys, **increments}
    for field in model._meta.concrete_fields:
        # Model defaults are not database defaults: an inserted row needs every column.
        if field.primary_key or field.name in columns or field.attname in columns:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            columns[field.name] = timezone.now()
        elif field.has_default():
            columns[field.name] = field.get_default()
    names = [model._meta.get_field(name).column for name in columns]
    values = [_db_value(model, name, value) for name, value in columns.items()]
    conflict = ", ".join(quote(model._meta.get_field(name).column) for name in keys)
    updates = ", ".join(
        f"{quote(col)} = {table}.{quote(col)} + EXCLUDED.{quote(col)}"
        for col in (model._meta.get_field(name).column for name in increments)
    )
    # Identifiers come from model metadata (quoted); every value is a parameter.
    column_list = ", ".join(quote(n) for n in names)
    placeholders = ", ".join(["%s"] * len(values))
    sql = (
        f"INSERT INTO {table} ({column_list}) VALUES ({placeholders}) ON CONFLICT ({conflict}) DO UPDATE SET {updates}"  # noqa: S608, E501
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)


def _db_value(model, name: str, value):
    field = model._meta.get_field(name)
    return field.get_db_prep_save(value, connection)


def _daily_increments(
    *,
    outcome: str,
    input_tokens: int,
    output_tokens: int,
    tool_calls: int,
    runtime_seconds: Decimal,
    guardrail_checks: int,
    cost: Decimal,
    estimated: bool,
    latency_ms: int | None,
) -> dict:
    increments = {
        "turns": 1,
        "failed_turns": int(outcome == "failed"),
        "cancelled_turns": int(outcome == "cancelled"),
        "blocked_turns": int(outcome == "blocked"),
        "estimated_turns": int(bool(estimated)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tool_calls": tool_calls,
        "runtime_seconds": runtime_seconds,
        "guardrail_checks": guardrail_checks,
        "cost": cost,
        "latency_ms_sum": latency_ms or 0,
    }
    for name in LATENCY_BUCKET_FIELDS:
        increments[name] = 0
    if latency_ms is not None:
        increments[latency_bucket_field(latency_ms)] = 1
    return increments


def record_turn(
    invocation,
    *,
    outcome: str,
    offering,
    input_tokens: int,
    output_tokens: int,
    tool_calls: int,
    runtime_seconds: Decimal,
    estimated: bool,
    guardrail_checks: int = 0,
    latency: bool = True,
) -> UsageEvent | None:
    """Write the invocation's usage event, roll-up and settlement; None if it was
    already recorded (a redelivery or replay: nothing else changes then).

    Must run inside the transaction that writes the final status."""
    now = timezone.now()
    prices = accounting.prices_for(invocation.model_key, offering, now)
    runtime_seconds = Decimal(str(runtime_seconds)).quantize(Decimal("0.001"))
    cost = prices.cost(input_tokens, output_tokens, tool_calls, runtime_seconds)
    latency_ms = None
    if latency and invocation.queued_at is not None:
        latency_ms = max(0, int((now - invocation.queued_at).total_seconds() * 1000))
    event = UsageEvent(
        tenant_id=invocation.tenant_id,
        invocation_id=invocation.pk,
        kind=UsageKind.AGENT_TURN,
        user_id=invocation.user_id,
        agent_slug=_agent_slug(invocation),
        model_key=invocation.model_key,
        outcome=outcome,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tool_calls=tool_calls,
        runtime_seconds=runtime_seconds,
        guardrail_checks=guardrail_checks,
        latency_ms=latency_ms,
        cost=cost,
        price_book_version=prices.version,
        estimated=estimated,
        created_at=now,
    )
    try:
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        log.info("turn %s: usage already recorded", invocation.pk)
        return None
    upsert_add(
        UsageDaily,
        {
            "tenant": invocation.tenant_id,
            "day": accounting.utc_day(now),
            "model_key": event.model_key,
            "agent_slug": event.agent_slug,
            "user_key": invocation.user_id or 0,
        },
        _daily_increments(
            outcome=outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tool_calls=tool_calls,
            runtime_seconds=runtime_seconds,
            guardrail_checks=guardrail_checks,
            cost=cost,
            estimated=estimated,
            latency_ms=latency_ms,
        ),
    )
    month = accounting.month_start(now)
    settle(invocation, month=month, tokens=input_tokens + output_tokens, cost=cost)
    _maybe_soft_alert(invocation.tenant_id, month)
    return event


def record_unrun_turn(invocation, *, outcome: str, guardrail_checks: int = 0) -> UsageEvent | None:
    """A turn that never reached the model (blocked by the input guardrails, or
    cancelled while queued): zero tokens and cost, and its reservation released."""
    return record_turn(
        invocation,
        outcome=outcome,
        offering=None,
        input_tokens=0,
        output_tokens=0,
        tool_calls=0,
        runtime_seconds=Decimal("0"),
        estimated=False,
        guardrail_checks=guardrail_checks,
        latency=outcome != "blocked",
    )


def _agent_slug(invocation) -> str:
    agent = getattr(invocation, "agent", None)
    if agent is not None:
        return agent.slug
    return ""


def settle(invocation, *, month, tokens: int, cost: Decimal) -> None:
    """Move the invocation's reservation (if it holds one) to real usage.

    The reservation flips held → settled with a conditional UPDATE, so only one
    caller ever subtracts it; the real usage is added to the month it happened
    in (the reservation is subtracted from the month it was taken in)."""
    reservation = Reservation.objects.filter(invocation_id=invocation.pk).first()
    held = (
        reservation is not None
        and Reservation.objects.filter(pk=reservation.pk, status=ReservationStatus.HELD).update(
            status=ReservationStatus.SETTLED, closed_at=timezone.now()
        )
        == 1
    )
    user_key = invocation.user_id or 0
    for key in {0, user_key}:
        upsert_add(
            MonthlyUsage,
            {"tenant": invocation.tenant_id, "month": month, "user_key": key},
            {"tokens_used": tokens, "tokens_reserved": 0, "cost_used": cost, "cost_reserved": Decimal("0")},
        )
    if held:
        _unreserve(reservation)


def release(invocation_id) -> bool:
    """Give a held reservation back unused (the turn will never be metered with
    real usage against it). True if this call released it."""
    reservation = Reservation.objects.filter(invocation_id=invocation_id).first()
    if reservation is None:
        return False
    changed = Reservation.objects.filter(pk=reservation.pk, status=ReservationStatus.HELD).update(
        status=ReservationStatus.RELEASED, closed_at=timezone.now()
    )
    if changed == 1:
        _unreserve(reservation)
    return changed == 1


def _unreserve(reservation: Reservation) -> None:
    for key in {0, reservation.user_key}:
        upsert_add(
            MonthlyUsage,
            {"tenant": reservation.tenant_id, "month": reservation.month, "user_key": key},
            {
                "tokens_used": 0,
                "tokens_reserved": -reservation.tokens,
                "cost_used": Decimal("0"),
                "cost_reserved": -reservation.cost,
            },
        )


def _maybe_soft_alert(tenant_id: int, month) -> None:
    """Alert the tenant's admins once a month when spend crosses the threshold.

    The flag flips with a conditional UPDATE, so parallel turns crossing the line
    together write one alert (an AuditLog entry the admins see)."""
    budget = TenantBudget.objects.filter(monthly_budget__isnull=False).first()
    if budget is None or not budget.monthly_budget or budget.alerted_month == month:
        return
    used = MonthlyUsage.objects.filter(month=month, user_key=0).values_list("cost_used", flat=True).first()
    threshold = budget.monthly_budget * Decimal(budget.soft_alert_percent) / 100
    if used is None or used < threshold:
        return
    from django.db.models import Q

    flipped = (
        TenantBudget.objects.filter(pk=budget.pk)
        .filter(Q(alerted_month__isnull=True) | ~Q(alerted_month=month))
        .update(alerted_month=month)
    )
    if flipped:
        from tenants import audit
        from tenants.models import Tenant

        tenant = Tenant.objects.get(pk=tenant_id)
        audit.record(
            "billing.budget_soft_alert",
            tenant=tenant,
            target=budget,
            target_repr=f"Budget {budget.monthly_budget}",
            after={
                "month": month.isoformat(),
                "cost_used": str(Decimal(used).quantize(accounting.CENTS)),
                "threshold_percent": budget.soft_alert_percent,
                "monthly_budget": str(budget.monthly_budget),
            },
        )
