"""Who uses the shared capacity: every tenant's load over a window, ranked (noisy neighbours).

The operator's Load page (portal/operator/load_views.py). One row per tenant with turns,
tokens in and out, its share of the platform's tokens, the most turns it had in progress
at once, the turns its limits refused, the p95 turn latency, and its tier's limits next
to them. Pool and bridge tenants share the runtime and stores; silo tenants have their
own, so they are ranked apart.

Where the numbers come from, the cheapest correct source for each window:

* **Last hour**: the raw usage and throttle events since an hour ago (their
  `created_at` indexes), aggregated by tenant in the database. Exact to the second.
* **Today and yesterday / Last 7 days**: whole UTC days of the daily roll-ups
  (`UsageDaily`, which also counts throttled requests and holds the latency histogram),
  so a tenant with millions of events costs as much as one with ten.
* **Peak concurrent turns**: from the turns' own timestamps (agents.concurrency), the
  turns that finished in the window or are still in progress.

Cross-tenant: call inside all_tenants() (the operator console).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.concurrency import peak_concurrent_turns
from billing.accounting import latency_percentile
from billing.models import LATENCY_BUCKET_FIELDS, LATENCY_BUCKETS_MS, ThrottleEvent, UsageDaily, UsageEvent, UsageKind

WINDOWS = {
    "hour": "Last hour",
    "2d": "Today and yesterday",
    "7d": "Last 7 days",
}
DEFAULT_WINDOW = "hour"
_DAYS = {"2d": 2, "7d": 7}


@dataclass(frozen=True)
class LoadWindow:
    key: str
    start: dt.datetime
    end: dt.datetime
    first_day: dt.date | None = None  # day windows: the roll-ups' first and last day
    last_day: dt.date | None = None

    @property
    def label(self) -> str:
        return WINDOWS[self.key]

    @property
    def from_rollups(self) -> bool:
        return self.first_day is not None


def load_window(key: str, now: dt.datetime | None = None) -> LoadWindow:
    """The window named `key` (one of WINDOWS) ending now; ValueError for another name."""
    if key not in WINDOWS:
        raise ValueError(f"Unknown window; use one of: {', '.join(WINDOWS)}.")
    now = (now or timezone.now()).astimezone(dt.UTC)
    if key == "hour":
        return LoadWindow(key, now - dt.timedelta(hours=1), now)
    last_day = now.date()
    first_day = last_day - dt.timedelta(days=_DAYS[key] - 1)
    start = dt.datetime.combine(first_day, dt.time.min, tzinfo=dt.UTC)
    return LoadWindow(key, start, now, first_day, last_day)


@dataclass
class LoadRow:
    tenant: object
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    throttled: int = 0
    peak_concurrent: int = 0
    latency: dict = field(default_factory=dict)
    share: Decimal | None = None  # percent of the platform's tokens in the window
    shared_share: Decimal | None = None  # pool and bridge: percent of the shared capacity's tokens

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def p95_ms(self) -> int | None:
        return latency_percentile(self.latency, 95)

    @property
    def shared(self) -> bool:
        """Whether it runs on the shared capacity rather than its own: its bindings decide
        (its own queue, and its own runtime unless the runtime is the in-process one)."""
        return not self.tenant.bindings.dedicated_capacity(settings.AGENT_RUNTIME)

    @property
    def limits(self):
        return self.tenant.tier

    @property
    def at_concurrency_limit(self) -> bool:
        limit = self.tenant.tier.concurrent_sessions
        return bool(limit) and self.peak_concurrent >= limit


@dataclass
class Load:
    window: LoadWindow
    shared: list[LoadRow]
    dedicated: list[LoadRow]
    tokens: int
    turns: int
    throttled: int

    @property
    def shared_tokens(self) -> int:
        return sum(r.tokens for r in self.shared)


def _rank_key(row: LoadRow):
    return (-row.tokens, -row.turns, -row.throttled, -row.peak_concurrent, row.tenant.name.lower())


def _latency_counts_of_events() -> dict:
    """The roll-up's latency histogram, counted from raw events (billing.models.latency_bucket_field)."""
    counts, lower = {}, None
    for upper, name in zip((*LATENCY_BUCKETS_MS, None), LATENCY_BUCKET_FIELDS, strict=True):
        in_bucket = Q(latency_ms__isnull=False) if lower is None else Q(latency_ms__gt=lower)
        if upper is not None:
            in_bucket &= Q(latency_ms__lte=upper)
        counts[name] = Count("pk", filter=in_bucket)
        lower = upper
    return counts


def _usage(window: LoadWindow) -> dict[int, dict]:
    if window.from_rollups:
        rows = (
            UsageDaily.unscoped.filter(day__gte=window.first_day, day__lte=window.last_day)
            .order_by()
            .values("tenant_id")
            .annotate(
                turns_sum=Sum("turns"),
                input_sum=Sum("input_tokens"),
                output_sum=Sum("output_tokens"),
                throttled_sum=Sum("throttled_requests"),
                **{f"{name}_sum": Sum(name) for name in LATENCY_BUCKET_FIELDS},
            )
        )
    else:
        rows = (
            # Turns and their model tokens (as the roll-ups' counters): embedding events are neither.
            UsageEvent.unscoped.filter(
                created_at__gte=window.start, created_at__lte=window.end, kind=UsageKind.AGENT_TURN
            )
            .order_by()
            .values("tenant_id")
            .annotate(
                turns_sum=Count("pk"),
                input_sum=Sum("input_tokens"),
                output_sum=Sum("output_tokens"),
                **{f"{name}_sum": count for name, count in _latency_counts_of_events().items()},
            )
        )
    return {row["tenant_id"]: row for row in rows}


def _throttles_last_hour(window: LoadWindow) -> dict[int, int]:
    rows = (
        ThrottleEvent.unscoped.filter(created_at__gte=window.start, created_at__lte=window.end)
        .order_by()
        .values("tenant_id")
        .annotate(n=Count("pk"))
    )
    return {row["tenant_id"]: row["n"] for row in rows}


def _percent(part: int, whole: int) -> Decimal | None:
    return (Decimal(part) * 100 / whole).quantize(Decimal("0.1")) if whole else None


def tenant_load(window: LoadWindow, tenants) -> Load:
    """Every tenant of `tenants` (with their tier) over `window`, ranked by tokens, then
    turns, refusals and peak concurrency; shared-capacity tenants apart from silo ones."""
    with transaction.atomic():  # one snapshot (and, on PostgreSQL, one setting of the scope)
        usage = _usage(window)
        throttles = None if window.from_rollups else _throttles_last_hour(window)
        peaks = peak_concurrent_turns(window.start, window.end)
    rows = []
    for tenant in tenants:
        u = usage.get(tenant.pk, {})
        rows.append(
            LoadRow(
                tenant=tenant,
                turns=int(u.get("turns_sum") or 0),
                input_tokens=int(u.get("input_sum") or 0),
                output_tokens=int(u.get("output_sum") or 0),
                throttled=int(u.get("throttled_sum") or 0) if throttles is None else throttles.get(tenant.pk, 0),
                peak_concurrent=peaks.get(tenant.pk, 0),
                latency={name: int(u.get(f"{name}_sum") or 0) for name in LATENCY_BUCKET_FIELDS},
            )
        )
    total = sum(r.tokens for r in rows)
    shared_total = sum(r.tokens for r in rows if r.shared)
    for row in rows:
        row.share = _percent(row.tokens, total)
        row.shared_share = _percent(row.tokens, shared_total) if row.shared else None
    rows.sort(key=_rank_key)
    return Load(
        window=window,
        shared=[r for r in rows if r.shared],
        dedicated=[r for r in rows if not r.shared],
        tokens=total,
        turns=sum(r.turns for r in rows),
        throttled=sum(r.throttled for r in rows),
    )
