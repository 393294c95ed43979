"""Demo usage: about two months of turns for the three demo tenants (ARCHITECTURE.md §6).

`seed_usage()` is called by `manage.py seed_demo`. It writes raw usage events,
refusals (throttle events), the daily roll-ups built from exactly those rows,
the month-to-date counters, budgets, and drafts the invoices — so the
dashboards, the operator table and `reconcile_usage` agree from the first page
view. Deterministic (a seeded random generator per tenant) and idempotent: a
tenant that already has usage events is left alone.

Volumes follow each tenant's plan: Acme (Basic) runs a little over its
included tokens, Globex (Standard) stays inside, Initech (Premium, dedicated)
is heavy and pays overage. Weekends are quieter and usage grows slowly.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.accounting import month_start, next_month, prices_for
from billing.models import (
    LATENCY_BUCKET_FIELDS,
    LimitKind,
    MonthlyUsage,
    TenantBudget,
    ThrottleEvent,
    UsageDaily,
    UsageEvent,
    UsageKind,
    latency_bucket_field,
)
from tenants import audit
from tenants.context import tenant_context
from tenants.roles import Role

DAYS = 62
NAMESPACE = uuid.UUID("6f1d1c1e-6a43-4f0e-9b8e-2f7f0c9d0a11")

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
SONNET = "anthropic.claude-3-7-sonnet-20250219-v1:0"


@dataclass(frozen=True)
class Profile:
    turns_per_weekday: int
    # (agent slug, model key, share of turns, mean input tokens, mean output tokens, median latency ms)
    mix: tuple[tuple[str, str, float, int, int, int], ...]
    budget: Decimal | None
    alert_percent: int
    throttles_per_day: float
    throttle_kinds: tuple[str, ...]


PROFILES = {
    "acme": Profile(
        turns_per_weekday=48,
        mix=(("helpdesk", "offline-small", 1.0, 700, 420, 650),),
        budget=None,
        alert_percent=80,
        throttles_per_day=4.0,
        throttle_kinds=(LimitKind.RPM, LimitKind.RPM, LimitKind.TPM, LimitKind.CONCURRENCY),
    ),
    "globex": Profile(
        turns_per_weekday=260,
        mix=(
            ("helpdesk", "offline-small", 0.45, 900, 380, 700),
            ("helpdesk", HAIKU, 0.35, 1500, 520, 2100),
            ("analyst", SONNET, 0.20, 3200, 900, 6200),
        ),
        budget=Decimal("750.00"),  # the $499 Standard fee + up to ~$251 of overage
        alert_percent=80,
        throttles_per_day=1.2,
        # Rate limits only: its bill stays under its $750 budget, so a budget refusal would
        # contradict the dashboard beside it.
        throttle_kinds=(LimitKind.RPM, LimitKind.TPM),
    ),
    "initech": Profile(
        turns_per_weekday=820,
        mix=(
            ("helpdesk", HAIKU, 0.30, 4000, 900, 2300),
            ("analyst", SONNET, 0.40, 14000, 2200, 6800),
            ("tps-reports", "initech-sonnet-ft", 0.30, 11000, 2600, 5400),
        ),
        budget=Decimal("6000.00"),  # the $4,900 Premium fee + up to $1,100 of overage
        alert_percent=90,
        throttles_per_day=0.4,
        throttle_kinds=(LimitKind.TPM, LimitKind.CONCURRENCY),
    ),
}


def seed_usage(now: dt.datetime | None = None) -> int:
    """Seed every demo tenant that has no usage yet; returns how many events were written."""
    from tenants.models import Tenant

    now = now or timezone.now()
    written = 0
    for slug, profile in PROFILES.items():
        tenant = Tenant.objects.select_related("tier").filter(slug=slug).first()
        if tenant is None:
            continue
        with tenant_context(tenant):
            if UsageEvent.objects.exists() or UsageDaily.objects.exists():
                continue
            written += _seed_tenant(tenant, profile, now)
    return written


def _people(tenant) -> list[int]:
    from tenants.models import Membership

    return list(Membership.objects.order_by("user__email").values_list("user_id", flat=True))


@transaction.atomic
def _seed_tenant(tenant, profile: Profile, now: dt.datetime) -> int:
    rng = random.Random(f"usage-{tenant.slug}")
    people = _people(tenant) or [None]
    # A few heavy users and a long tail: weights fall off by rank.
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(people))]
    prices = {}
    events: list[UsageEvent] = []
    throttles: list[ThrottleEvent] = []
    today = now.astimezone(dt.UTC).date()
    first_day = today - dt.timedelta(days=DAYS - 1)  # DAYS read at call time (tests shorten it)
    seq = 0
    for offset in range(DAYS):
        day = first_day + dt.timedelta(days=offset)
        growth = 0.8 + 0.35 * offset / DAYS
        weekday = day.weekday() < 5
        expected = profile.turns_per_weekday * growth * (1.0 if weekday else 0.3)
        turns = max(0, int(rng.gauss(expected, expected * 0.12)))
        day_start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        horizon = 86400 if day < today else max(60, int((now - day_start).total_seconds()))
        if day == today:
            turns = int(turns * horizon / 86400)
        for _ in range(turns):
            agent, model, in_mean, out_mean, latency_median = _pick(rng, profile.mix)
            user_id = rng.choices(people, weights)[0]
            seq += 1
            roll = rng.random()
            outcome = "done"
            if roll < 0.012:
                outcome = "failed"
            elif roll < 0.017:
                outcome = "cancelled"
            elif roll < 0.023:
                outcome = "blocked"
            input_tokens = max(20, int(rng.lognormvariate(math.log(in_mean), 0.45)))
            output_tokens = max(5, int(rng.lognormvariate(math.log(out_mean), 0.5)))
            latency = int(rng.lognormvariate(math.log(latency_median), 0.55))
            tool_calls = rng.choice((0, 0, 0, 1, 1, 2)) if agent != "helpdesk" else rng.choice((0, 0, 1))
            if outcome == "blocked":
                input_tokens = output_tokens = tool_calls = 0
                latency = None
            elif outcome in ("failed", "cancelled"):
                output_tokens = output_tokens // 4
            runtime = Decimal(latency or 0) / 1000
            key = (model, day)
            if key not in prices:
                prices[key] = prices_for(model, _offering(model), day_start + dt.timedelta(hours=12))
            price = prices[key]
            events.append(
                UsageEvent(
                    tenant=tenant,
                    invocation_id=uuid.uuid5(NAMESPACE, f"{tenant.slug}-{seq}"),
                    kind=UsageKind.AGENT_TURN,
                    user_id=user_id,
                    agent_slug=agent,
                    model_key=model,
                    outcome=outcome,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    tool_calls=tool_calls,
                    runtime_seconds=runtime.quantize(Decimal("0.001")),
                    guardrail_checks=2 if outcome != "blocked" else 1,
                    latency_ms=latency,
                    cost=price.cost(input_tokens, output_tokens, tool_calls, runtime.quantize(Decimal("0.001"))),
                    price_book_version=price.version,
                    estimated=model == "offline-small" and rng.random() < 0.05,
                    created_at=day_start + dt.timedelta(seconds=rng.randrange(horizon)),
                )
            )
        refusals = int(rng.expovariate(1 / profile.throttles_per_day)) if weekday else 0
        for _ in range(refusals):
            kind = rng.choice(profile.throttle_kinds)
            agent, model, *_ = _pick(rng, profile.mix)
            throttles.append(
                ThrottleEvent(
                    tenant=tenant,
                    user_id=rng.choices(people, weights)[0],
                    kind=kind,
                    status=402 if kind in (LimitKind.QUOTA, LimitKind.BUDGET) else 429,
                    message=f"Refused by the {LimitKind(kind).label.lower()} limit.",
                    agent_slug=agent,
                    model_key=model,
                    created_at=day_start + dt.timedelta(seconds=rng.randrange(horizon)),
                )
            )
    UsageEvent.objects.bulk_create(events, batch_size=2000)
    ThrottleEvent.objects.bulk_create(throttles, batch_size=2000)
    write_rollups(tenant, events, throttles)
    if profile.budget is not None:
        budget, new = TenantBudget.objects.update_or_create(
            defaults={"monthly_budget": profile.budget, "soft_alert_percent": profile.alert_percent}
        )
        if new:
            audit.record(
                "billing.budget_set",
                actor=audit.seeded_by(Role.OWNER),
                tenant=tenant,
                target=budget,
                target_repr="Monthly budget",
                after={"monthly_budget": f"{profile.budget:.2f}", "soft_alert_percent": profile.alert_percent},
            )
    _draft_invoices(tenant, today)
    return len(events)


def _pick(rng: random.Random, mix):
    roll, upto = rng.random(), 0.0
    for agent, model, share, in_mean, out_mean, latency in mix:
        upto += share
        if roll <= upto:
            return agent, model, in_mean, out_mean, latency
    agent, model, _, in_mean, out_mean, latency = mix[-1]
    return agent, model, in_mean, out_mean, latency


def _offering(model_key: str):
    from agents.models import ModelOffering

    return ModelOffering.objects.filter(key=model_key).first()


def write_rollups(tenant, events, throttles) -> None:
    """The daily roll-ups and month counters of exactly these rows (the same sums the
    metering writes one event at a time), for a tenant that had none."""
    daily: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    monthly: dict[tuple, dict] = defaultdict(lambda: {"tokens": 0, "cost": Decimal("0")})
    for e in events:
        day = e.created_at.astimezone(dt.UTC).date()
        row = daily[(day, e.model_key, e.agent_slug, e.user_id or 0)]
        row["turns"] += 1
        row["failed_turns"] += e.outcome == "failed"
        row["cancelled_turns"] += e.outcome == "cancelled"
        row["blocked_turns"] += e.outcome == "blocked"
        row["estimated_turns"] += e.estimated
        row["input_tokens"] += e.input_tokens
        row["output_tokens"] += e.output_tokens
        row["tool_calls"] += e.tool_calls
        row["runtime_seconds"] += e.runtime_seconds
        row["guardrail_checks"] += e.guardrail_checks
        row["cost"] += e.cost
        if e.latency_ms is not None:
            row["latency_ms_sum"] += e.latency_ms
            row[latency_bucket_field(e.latency_ms)] += 1
        for user_key in {0, e.user_id or 0}:
            counter = monthly[(month_start(day), user_key)]
            counter["tokens"] += e.input_tokens + e.output_tokens
            counter["cost"] += e.cost
    for t in throttles:
        day = t.created_at.astimezone(dt.UTC).date()
        daily[(day, t.model_key, t.agent_slug, t.user_id or 0)]["throttled_requests"] += 1
    fields = ("turns", "failed_turns", "cancelled_turns", "blocked_turns", "estimated_turns", "throttled_requests")
    UsageDaily.objects.bulk_create(
        [
            UsageDaily(
                tenant=tenant,
                day=day,
                model_key=model,
                agent_slug=agent,
                user_key=user_key,
                **{name: row.get(name, 0) for name in fields},
                input_tokens=row.get("input_tokens", 0),
                output_tokens=row.get("output_tokens", 0),
                tool_calls=row.get("tool_calls", 0),
                runtime_seconds=row.get("runtime_seconds", 0),
                guardrail_checks=row.get("guardrail_checks", 0),
                cost=row.get("cost", 0),
                latency_ms_sum=row.get("latency_ms_sum", 0),
                **{name: row.get(name, 0) for name in LATENCY_BUCKET_FIELDS},
            )
            for (day, model, agent, user_key), row in daily.items()
        ],
        batch_size=2000,
    )
    for (month, user_key), c in monthly.items():
        changed = MonthlyUsage.objects.filter(month=month, user_key=user_key).update(
            tokens_used=F("tokens_used") + c["tokens"], cost_used=F("cost_used") + c["cost"]
        )
        if not changed:
            MonthlyUsage.objects.create(month=month, user_key=user_key, tokens_used=c["tokens"], cost_used=c["cost"])


def _draft_invoices(tenant, today: dt.date) -> None:
    from billing.invoices import draft_invoice

    this_month = month_start(today)
    month = month_start(today - dt.timedelta(days=DAYS - 1))
    while month <= this_month:
        draft_invoice(tenant, month)
        month = next_month(month)
