"""Small shared helpers over the billing models: months, prices, roll-up sums and
latency percentiles from the roll-up histogram. Used by metering, limits,
reconcile_usage and the dashboards. (What a tenant spends in money — its bill — is
billing.spend.)"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from billing.models import (
    LATENCY_BUCKET_FIELDS,
    LATENCY_BUCKETS_MS,
    ModelPrice,
    PriceBook,
    UsageDaily,
)

CENTS = Decimal("0.01")
COST_QUANTUM = Decimal("0.00000001")


def month_start(when: dt.datetime | dt.date | None = None) -> dt.date:
    """The first day (UTC) of the month containing `when` (now by default)."""
    when = when or timezone.now()
    if isinstance(when, dt.datetime):
        when = when.astimezone(dt.UTC).date() if timezone.is_aware(when) else when.date()
    return when.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def utc_day(when: dt.datetime) -> dt.date:
    return when.astimezone(dt.UTC).date() if timezone.is_aware(when) else when.date()


@dataclass(frozen=True)
class Prices:
    """What one unit costs under one price book (version 0: no book in force, catalogue list prices)."""

    version: int
    per_1k_input: Decimal
    per_1k_output: Decimal
    per_tool_call: Decimal = Decimal("0")
    per_runtime_second: Decimal = Decimal("0")

    def cost(self, input_tokens: int, output_tokens: int, tool_calls: int = 0, runtime_seconds=0) -> Decimal:
        total = (
            self.per_1k_input * Decimal(input_tokens) / 1000
            + self.per_1k_output * Decimal(output_tokens) / 1000
            + self.per_tool_call * Decimal(tool_calls)
            + self.per_runtime_second * Decimal(str(runtime_seconds))
        )
        return total.quantize(COST_QUANTUM)


def price_book_at(when: dt.datetime | None = None) -> PriceBook | None:
    """The book in force at `when`: the latest effective_from ≤ when."""
    when = when or timezone.now()
    return PriceBook.objects.filter(effective_from__lte=when).order_by("-effective_from", "-version").first()


# The book in force at a moment and its row for one model, in one statement (it runs
# twice per chat turn: the admission's estimate and the usage event's price).
_PRICES_SQL = """
SELECT b.version, b.per_tool_call, b.per_runtime_second, p.per_1k_input, p.per_1k_output
FROM (
    SELECT id, version, per_tool_call, per_runtime_second FROM billing_pricebook
    WHERE effective_from <= %s ORDER BY effective_from DESC, version DESC LIMIT 1
) b
LEFT JOIN billing_modelprice p ON p.price_book_id = b.id AND p.model_key = %s
"""


def prices_statement(model_key: str, when: dt.datetime | None = None) -> tuple[str, list]:
    """The query prices_for() runs, for a caller that sends it with other statements."""
    from portal.db import sql

    return _PRICES_SQL, [sql.dt(when or timezone.now()), model_key]


def prices_from_row(row, offering=None) -> Prices:
    """Prices from a row of prices_statement() (None, or a row of NULLs: no book in force).

    A book in force that does not list the model (a fine-tune created after it was
    published) still prices the turn's tool calls and runtime seconds, and the event
    records that book's version; only the token prices come from the catalogue."""
    from portal.db import sql

    if row is None or row[0] is None:
        if offering is None:
            return Prices(0, Decimal("0"), Decimal("0"))
        return Prices(0, offering.price_per_1k_input, offering.price_per_1k_output)
    version, per_tool_call, per_runtime_second, per_1k_input, per_1k_output = row
    if per_1k_input is None:
        per_1k_input = offering.price_per_1k_input if offering is not None else Decimal("0")
        per_1k_output = offering.price_per_1k_output if offering is not None else Decimal("0")
    return Prices(
        version,
        sql.decimal_from_db(per_1k_input, 8),
        sql.decimal_from_db(per_1k_output, 8),
        sql.decimal_from_db(per_tool_call, 8),
        sql.decimal_from_db(per_runtime_second, 8),
    )


def prices_for(model_key: str, offering=None, when: dt.datetime | None = None) -> Prices:
    """Prices of `model_key` at `when`. The book in force decides, and the event records
    its version; token prices of a model the book does not list come from the catalogue
    (`offering`). With no book in force at all, everything is the catalogue's (version 0)."""
    from portal.db import sql

    return prices_from_row(sql.one(*prices_statement(model_key, when)), offering)


def publish_from_catalogue(note: str = "", effective_from: dt.datetime | None = None) -> PriceBook:
    """A new price book (next version) with every catalogue model's list prices.
    Call inside all_tenants()/operator code: the catalogue includes fine-tunes."""
    from agents.models import ModelOffering

    last = PriceBook.objects.order_by("-version").values_list("version", flat=True).first() or 0
    book = PriceBook.objects.create(
        version=last + 1, effective_from=effective_from or timezone.now(), note=note or "From the model catalogue"
    )
    ModelPrice.objects.bulk_create(
        ModelPrice(
            price_book=book, model_key=o.key, per_1k_input=o.price_per_1k_input, per_1k_output=o.price_per_1k_output
        )
        for o in ModelOffering.unscoped.all()
    )
    return book


def rollup_totals(queryset=None, **filters) -> dict:
    """Sums of the UsageDaily counters (in the current tenant context) for the filters,
    e.g. rollup_totals(day__gte=..., day__lt=...)."""
    from billing.models import DAILY_COUNTERS

    qs = queryset if queryset is not None else UsageDaily.objects.filter(**filters)
    sums = qs.aggregate(**{name: Sum(name) for name in DAILY_COUNTERS})
    return {name: (value if value is not None else 0) for name, value in sums.items()}


def turns_by_tenant(first_day: dt.date) -> dict[int, int]:
    """Every tenant's turns (one usage event each, whatever the outcome) from `first_day`
    (UTC) on, from the roll-ups. Reads across tenants: call inside all_tenants()."""
    rows = UsageDaily.unscoped.filter(day__gte=first_day).values("tenant_id").annotate(turns=Sum("turns"))
    return {row["tenant_id"]: row["turns"] or 0 for row in rows.order_by()}


def latency_percentile(buckets: dict, percentile: float) -> int | None:
    """Estimate a latency percentile (ms) from summed histogram buckets
    ({"lat_le_250": n, …}): the upper bound of the bucket holding the rank,
    interpolated linearly inside it. None when there are no samples."""
    counts = [int(buckets.get(name) or 0) for name in LATENCY_BUCKET_FIELDS]
    total = sum(counts)
    if total == 0:
        return None
    rank = percentile / 100.0 * total
    lower = 0
    seen = 0
    bounds = list(LATENCY_BUCKETS_MS) + [LATENCY_BUCKETS_MS[-1] * 2]
    for count, upper in zip(counts, bounds, strict=True):
        if count and seen + count >= rank:
            fraction = (rank - seen) / count
            return int(lower + fraction * (upper - lower))
        seen += count
        lower = upper
    return bounds[-1]
