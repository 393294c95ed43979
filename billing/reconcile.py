"""Proof that the money adds up: raw usage events = daily roll-ups = month
counters = invoice (ARCHITECTURE.md §7). Used by `manage.py reconcile_usage`.

Every comparison is exact on PostgreSQL (NUMERIC). SQLite stores decimals as
floating point, so costs there are compared at 6 decimal places.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import Case, Count, IntegerField, Q, Sum, When
from django.db.models.functions import TruncDate

from billing.accounting import next_month
from billing.models import (
    DAILY_COUNTERS,
    LATENCY_BUCKET_FIELDS,
    LATENCY_BUCKETS_MS,
    Invoice,
    InvoiceStatus,
    MonthlyUsage,
    Reservation,
    ReservationStatus,
    ThrottleEvent,
    UsageDaily,
    UsageEvent,
    UsageKind,
)

KEY_FIELDS = ("day", "model_key", "agent_slug", "user_key")


@dataclass
class Report:
    tenant: str
    month: dt.date
    differences: list[str] = field(default_factory=list)
    events: int = 0
    rollup_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences


def _norm(name: str, value):
    if value is None:
        value = 0
    if name in ("cost", "runtime_seconds", "cost_used"):
        places = Decimal("0.000001") if connection.vendor == "sqlite" else Decimal("0.00000001")
        return Decimal(str(value)).quantize(places)
    return int(value)


def _latency_bucket_aggregates() -> dict:
    aggregates = {}
    lower = None
    for bound, name in zip(LATENCY_BUCKETS_MS, LATENCY_BUCKET_FIELDS, strict=False):
        condition = Q(latency_ms__lte=bound) if lower is None else Q(latency_ms__gt=lower, latency_ms__lte=bound)
        aggregates[name] = Sum(Case(When(condition, then=1), default=0, output_field=IntegerField()))
        lower = bound
    aggregates[LATENCY_BUCKET_FIELDS[-1]] = Sum(
        Case(When(latency_ms__gt=LATENCY_BUCKETS_MS[-1], then=1), default=0, output_field=IntegerField())
    )
    return aggregates


def events_by_key(month: dt.date) -> dict[tuple, dict]:
    """The raw events (and throttle events) of the month summed per roll-up key."""
    start, end = _bounds(month)
    turn = Q(kind=UsageKind.AGENT_TURN)
    rows = (
        UsageEvent.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "model_key", "agent_slug", "user_id")
        .annotate(
            # Turns are agent_turn events; an embedding event adds its tokens to
            # embedding_tokens and its price to cost, nothing else (metering.record_embedding).
            # (First: the input_tokens annotation below would shadow the field.)
            embedding_tokens=Sum("input_tokens", filter=Q(kind=UsageKind.EMBEDDING)),
            turns=Count("id", filter=turn),
            failed_turns=Count("id", filter=turn & Q(outcome="failed")),
            cancelled_turns=Count("id", filter=turn & Q(outcome="cancelled")),
            blocked_turns=Count("id", filter=turn & Q(outcome="blocked")),
            estimated_turns=Count("id", filter=turn & Q(estimated=True)),
            input_tokens=Sum("input_tokens", filter=turn),
            output_tokens=Sum("output_tokens", filter=turn),
            tool_calls=Sum("tool_calls", filter=turn),
            runtime_seconds=Sum("runtime_seconds", filter=turn),
            guardrail_checks=Sum("guardrail_checks", filter=turn),
            cost=Sum("cost"),
            latency_ms_sum=Sum("latency_ms"),
            **_latency_bucket_aggregates(),
        )
    )
    out: dict[tuple, dict] = {}
    for row in rows:
        key = (row["day"], row["model_key"], row["agent_slug"], row["user_id"] or 0)
        counters = out.setdefault(key, {name: 0 for name in DAILY_COUNTERS})
        for name in DAILY_COUNTERS:
            if name in row:
                counters[name] += row[name] or 0
    throttles = (
        ThrottleEvent.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "model_key", "agent_slug", "user_id")
        .annotate(n=Count("id"))
    )
    for row in throttles:
        key = (row["day"], row["model_key"], row["agent_slug"], row["user_id"] or 0)
        counters = out.setdefault(key, {name: 0 for name in DAILY_COUNTERS})
        counters["throttled_requests"] += row["n"]
    return {key: {n: _norm(n, v) for n, v in counters.items()} for key, counters in out.items()}


def rollups_by_key(month: dt.date) -> dict[tuple, dict]:
    rows = UsageDaily.objects.filter(day__gte=month, day__lt=next_month(month)).values(*KEY_FIELDS, *DAILY_COUNTERS)
    return {tuple(row[k] for k in KEY_FIELDS): {n: _norm(n, row[n]) for n in DAILY_COUNTERS} for row in rows}


def _bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(month, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(next_month(month), dt.time(), tzinfo=dt.UTC)
    return start, end


def reconcile(tenant, month: dt.date, *, today: dt.date | None = None) -> Report:
    """Compare the tenant's month (call inside its tenant context)."""
    report = Report(tenant=tenant.slug, month=month)
    raw = events_by_key(month)
    rolled = rollups_by_key(month)
    report.events = sum(c["turns"] for c in raw.values())
    report.rollup_rows = len(rolled)
    zero = {name: 0 for name in DAILY_COUNTERS}
    for key in sorted(set(raw) | set(rolled), key=str):
        left = raw.get(key, zero)
        right = rolled.get(key, zero)
        for name in DAILY_COUNTERS:
            if _norm(name, left[name]) != _norm(name, right[name]):
                report.differences.append(
                    f"{tenant.slug} {_key_label(key)}: {name} raw events {left[name]} != roll-up {right[name]}"
                )

    # The month counters admission reserves against hold the same settled usage.
    tokens = sum(c["input_tokens"] + c["output_tokens"] for c in raw.values())
    cost = sum((c["cost"] for c in raw.values()), Decimal("0"))
    # The month counters hold the turns' usage: embeddings are admitted by no one and use
    # no quota (metering.record_embedding), so their cost is in `cost` but not the counter's.
    start, end = _bounds(month)
    embedding_cost = UsageEvent.objects.filter(
        created_at__gte=start, created_at__lt=end, kind=UsageKind.EMBEDDING
    ).aggregate(total=Sum("cost"))["total"] or Decimal("0")
    counter = MonthlyUsage.objects.filter(month=month, user_key=0).first()
    if counter is not None or tokens:
        used_tokens = counter.tokens_used if counter else 0
        used_cost = counter.cost_used if counter else 0
        if used_tokens != tokens:
            report.differences.append(
                f"{tenant.slug} {month:%Y-%m}: month counter tokens {used_tokens} != events {tokens}"
            )
        turn_cost = cost - embedding_cost
        if _norm("cost", used_cost) != _norm("cost", turn_cost):
            report.differences.append(
                f"{tenant.slug} {month:%Y-%m}: month counter cost {used_cost} != turn events {turn_cost}"
            )

    # A reservation still held by a turn that has ended would block budget for nothing.
    from agents.models import FINAL_STATUSES, Invocation

    held = Reservation.objects.filter(month=month, status=ReservationStatus.HELD).values_list(
        "invocation_id", flat=True
    )
    ended = Invocation.objects.filter(pk__in=list(held), status__in=FINAL_STATUSES).values_list("pk", flat=True)
    for invocation_id in ended:
        report.differences.append(f"{tenant.slug} {month:%Y-%m}: reservation of ended turn {invocation_id} still held")

    invoice = Invoice.objects.filter(period=month).first()
    if invoice is not None:
        report.differences.extend(_check_invoice(tenant, invoice, tokens, cost, today=today))
    return report


def _check_invoice(tenant, invoice: Invoice, tokens: int, cost: Decimal, *, today: dt.date | None) -> list[str]:
    label = f"{tenant.slug} invoice {invoice.period:%Y-%m} ({invoice.status})"
    today = today or dt.datetime.now(dt.UTC).date()
    open_month = invoice.period <= today < next_month(invoice.period)
    diffs = []
    lines_total = sum((line.amount for line in invoice.lines.all()), Decimal("0"))
    if _norm("cost", invoice.total) != _norm("cost", lines_total):
        diffs.append(f"{label}: total {invoice.total} != sum of lines {lines_total}")
    if _norm("cost", invoice.total) != _norm("cost", invoice.base_fee + invoice.overage_amount):
        diffs.append(
            f"{label}: total {invoice.total} != base fee {invoice.base_fee} + overage {invoice.overage_amount}"
        )
    if open_month and invoice.status == InvoiceStatus.DRAFT:
        return diffs  # a draft of the running month is a snapshot; usage moves on after it
    if invoice.tokens != tokens:
        diffs.append(f"{label}: tokens {invoice.tokens} != events {tokens}")
    if _norm("cost", invoice.cost) != _norm("cost", cost):
        diffs.append(f"{label}: cost {invoice.cost} != events {cost}")
    if invoice.status == InvoiceStatus.DRAFT and tenant.tier is not None:
        try:
            from billing.invoices import plan_terms, prorated_amounts, tier_periods
        except ImportError:  # pragma: no cover - the invoices module ships with billing
            prorated_amounts = None
        if prorated_amounts is not None:
            # The month's own plan terms (recorded on the invoice once it is over), not the tier now,
            # prorated over the tier periods when the tier changed during the month.
            terms = plan_terms(tenant, invoice.period, invoice, today=today)
            base, overage, total = prorated_amounts(tier_periods(tenant, invoice.period, terms, tokens))
            if (invoice.base_fee, invoice.overage_amount, invoice.total) != (base, overage, total):
                diffs.append(
                    f"{label}: amounts {invoice.base_fee}/{invoice.overage_amount}/{invoice.total} "
                    f"!= plan prices applied to the events {base}/{overage}/{total}"
                )
    return diffs


def _key_label(key: tuple) -> str:
    day, model_key, agent_slug, user_key = key
    return f"{day} model={model_key or '-'} agent={agent_slug or '-'} user={user_key or '-'}"
