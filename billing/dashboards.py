"""The numbers behind the usage dashboards, from the daily roll-ups only.

Every chart and total here is a handful of GROUP BY queries over `UsageDaily`
(one row per tenant × day × model × agent × user), never a scan of raw usage
events, so a tenant with ten million events renders in milliseconds
(`make bench`: dashboard_ms_p50). Only the drill-down (`events_page`) reads raw
events, a page at a time, newest first, through the (tenant, created_at) index.

Tenant functions run in the tenant's context (the default managers). The
operator table (`operator_rows`) reads every tenant's roll-ups and must be
called inside `all_tenants(reason)`.

Money stays `Decimal` from the database to the template; charts get floats only
at the very end (`chart_number`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import spend
from billing.accounting import CENTS, latency_percentile, month_start, next_month
from billing.invoices import month_tiers, owes_invoice, plan_terms
from billing.models import (
    LATENCY_BUCKET_FIELDS,
    Invoice,
    TenantBudget,
    ThrottleEvent,
    UsageDaily,
    UsageEvent,
)
from billing.spend import Bill, BudgetRule

GROUPINGS = ("day", "week", "month")
BREAKDOWNS = ("model", "agent", "user")
BREAKDOWN_FIELDS = {"model": "model_key", "agent": "agent_slug", "user": "user_key"}
MAX_RANGE_DAYS = 800  # a bit over two years: enough for any question, bounded for the database
FORECAST_TRAILING_DAYS = 7

# The sums each bucket or breakdown row carries.
_SUMS = {
    "turns": Sum("turns"),
    "failed_turns": Sum("failed_turns"),
    "blocked_turns": Sum("blocked_turns"),
    "throttled_requests": Sum("throttled_requests"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "tool_calls": Sum("tool_calls"),
    "embedding_tokens": Sum("embedding_tokens"),
    "cost": Sum("cost"),
    "latency_ms_sum": Sum("latency_ms_sum"),
}
_LATENCY_SUMS = {name: Sum(name) for name in LATENCY_BUCKET_FIELDS}
# What the dashboard page shows of each person (tokens, cost, turns and share:
# templates/billing/_dashboard_body.html). The per-person breakdown is the one GROUP BY
# that cannot be folded from the slices, and four sums instead of seventeen make it
# about 2.5× cheaper (SQLite, 9,000 roll-up rows: 14 → 5 ms). The API and the CSV
# export ask for every sum.
_PAGE_PERSON_SUMS = {name: _SUMS[name] for name in ("turns", "input_tokens", "output_tokens", "cost")}


class BadQuery(ValueError):
    """A dashboard parameter that makes no sense; `field` names it for the error answer."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


# --- the window a dashboard looks at ------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Days `start`..`end` (inclusive, UTC), bucketed by `grouping`."""

    start: dt.date
    end: dt.date
    grouping: str = "day"
    preset: str = ""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def buckets(self) -> list[dt.date]:
        """The first day of every bucket in the window, so empty periods still show as zero."""
        first = _bucket_of(self.start, self.grouping)
        out, current = [], first
        while current <= self.end:
            out.append(current)
            if self.grouping == "day":
                current += dt.timedelta(days=1)
            elif self.grouping == "week":
                current += dt.timedelta(days=7)
            else:
                current = next_month(current)
        return out


PRESETS = {
    "month": "This month",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "last-month": "Last month",
}


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


# Far enough for any real question, and far from the ends of the calendar (date arithmetic
# on 9999-12-31 overflows).
EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2100, 12, 31)


def parse_date(value: str, field_name: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value.strip())
    except (ValueError, AttributeError, TypeError):
        raise BadQuery(field_name, f"“{str(value)[:40]}” is not a date; use YYYY-MM-DD.") from None
    if not EARLIEST <= day <= LATEST:
        raise BadQuery(field_name, f"Choose a date between {EARLIEST} and {LATEST}.")
    return day


def parse_window(params, *, default_preset: str = "30d") -> Window:
    """The window from query parameters: `range` (a preset) or `from`/`to`, and `grouping`.

    Raises BadQuery with a message a person can act on; the UI shows it, the API
    answers it as a 400 problem.
    """
    grouping = (params.get("grouping") or "day").strip()
    if grouping not in GROUPINGS:
        raise BadQuery("grouping", f"Unknown grouping “{grouping[:20]}”; use one of: {', '.join(GROUPINGS)}.")
    start_raw, end_raw = params.get("from"), params.get("to")
    now = today()
    if start_raw or end_raw:
        start = parse_date(start_raw, "from") if start_raw else now - dt.timedelta(days=29)
        end = parse_date(end_raw, "to") if end_raw else now
        preset = ""
    else:
        preset = (params.get("range") or default_preset).strip()
        if preset not in PRESETS:
            raise BadQuery("range", f"Unknown range “{preset[:20]}”; use one of: {', '.join(PRESETS)}.")
        start, end = _preset(preset, now)
    if end < start:
        raise BadQuery("to", "The end date is before the start date.")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise BadQuery("from", f"Choose at most {MAX_RANGE_DAYS} days.")
    return Window(start=start, end=end, grouping=grouping, preset=preset)


def _preset(preset: str, now: dt.date) -> tuple[dt.date, dt.date]:
    if preset == "month":
        return now.replace(day=1), now
    if preset == "last-month":
        this = now.replace(day=1)
        last = (this - dt.timedelta(days=1)).replace(day=1)
        return last, this - dt.timedelta(days=1)
    days = 90 if preset == "90d" else 30
    return now - dt.timedelta(days=days - 1), now


def _bucket_of(day: dt.date, grouping: str) -> dt.date:
    if grouping == "week":
        return day - dt.timedelta(days=day.weekday())
    if grouping == "month":
        return day.replace(day=1)
    return day


def bucket_label(day: dt.date, grouping: str) -> str:
    if grouping == "month":
        return day.strftime("%b %Y")
    if grouping == "week":
        return "Week of " + day.strftime("%-d %b")
    return day.strftime("%-d %b")


# --- numbers -----------------------------------------------------------------------------


def _int(value) -> int:
    return int(value or 0)


def _money(value) -> Decimal:
    return Decimal(value or 0)


@dataclass
class Totals:
    turns: int = 0
    failed_turns: int = 0
    blocked_turns: int = 0
    throttled_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    # The knowledge bases' embedding tokens: not plan tokens (`tokens`), their cost is in `cost`.
    embedding_tokens: int = 0
    cost: Decimal = Decimal("0")
    latency_ms_sum: int = 0
    latency: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict) -> Totals:
        return cls(
            turns=_int(row.get("turns")),
            failed_turns=_int(row.get("failed_turns")),
            blocked_turns=_int(row.get("blocked_turns")),
            throttled_requests=_int(row.get("throttled_requests")),
            input_tokens=_int(row.get("input_tokens")),
            output_tokens=_int(row.get("output_tokens")),
            tool_calls=_int(row.get("tool_calls")),
            embedding_tokens=_int(row.get("embedding_tokens")),
            cost=_money(row.get("cost")),
            latency_ms_sum=_int(row.get("latency_ms_sum")),
            latency={name: _int(row.get(name)) for name in LATENCY_BUCKET_FIELDS},
        )

    @classmethod
    def empty(cls) -> Totals:
        return cls(latency={name: 0 for name in LATENCY_BUCKET_FIELDS})

    def add(self, other: Totals) -> Totals:
        """Add another row's sums into this one (in place)."""
        self.turns += other.turns
        self.failed_turns += other.failed_turns
        self.blocked_turns += other.blocked_turns
        self.throttled_requests += other.throttled_requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.tool_calls += other.tool_calls
        self.embedding_tokens += other.embedding_tokens
        self.cost += other.cost
        self.latency_ms_sum += other.latency_ms_sum
        for name, count in other.latency.items():
            self.latency[name] = self.latency.get(name, 0) + count
        return self

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        """Failed turns among turns that ran (blocked turns never reached a model)."""
        ran = self.turns - self.blocked_turns
        return self.failed_turns / ran if ran > 0 else None

    @property
    def p50_ms(self) -> int | None:
        return latency_percentile(self.latency, 50)

    @property
    def p95_ms(self) -> int | None:
        return latency_percentile(self.latency, 95)

    @property
    def samples(self) -> int:
        return sum(self.latency.values())

    @property
    def cost_per_1k_tokens(self) -> Decimal | None:
        """Over every token paid for: `cost` prices the embedding tokens too."""
        paid_for = self.tokens + self.embedding_tokens
        return (self.cost * 1000 / paid_for) if paid_for else None

    def as_dict(self) -> dict:
        """The totals as the tenant's API and CSV export give them: tokens and turns, never
        the price book's cost (the provider's; operators read `cost` on the object)."""
        return {
            "turns": self.turns,
            "failed_turns": self.failed_turns,
            "blocked_turns": self.blocked_turns,
            "throttled_requests": self.throttled_requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens": self.tokens,
            "tool_calls": self.tool_calls,
            "embedding_tokens": self.embedding_tokens,
            "error_rate": self.error_rate,
            "latency_p50_ms": self.p50_ms,
            "latency_p95_ms": self.p95_ms,
        }


@dataclass
class Bucket:
    start: dt.date
    label: str
    totals: Totals


def _rollups(window: Window):
    return UsageDaily.objects.filter(day__gte=window.start, day__lte=window.end)


def totals(window: Window) -> Totals:
    return Totals.from_row(_rollups(window).aggregate(**_SUMS, **_LATENCY_SUMS))


@dataclass
class Slice:
    """The window's roll-ups summed per day × model × agent: one scan that the timeseries and the
    model and agent breakdowns are all folded from (people are summed by a second query)."""

    day: dt.date
    model_key: str
    agent_slug: str
    totals: Totals


class Slices(list):
    """The slices of one window, remembering which days were read (a quiet day has no slice)."""

    def __init__(self, items, window: Window):
        super().__init__(items)
        self.window_start, self.window_end = window.start, window.end


def slices(window: Window) -> Slices:
    rows = _rollups(window).order_by().values("day", "model_key", "agent_slug").annotate(**_SUMS, **_LATENCY_SUMS)
    return Slices((Slice(r["day"], r["model_key"], r["agent_slug"], Totals.from_row(r)) for r in rows), window)


def timeseries(window: Window, parts: list[Slice] | None = None) -> list[Bucket]:
    """One bucket per day / week / month of the window, zeros included."""
    parts = slices(window) if parts is None else parts
    found: dict[dt.date, Totals] = {}
    for part in parts:
        key = _bucket_of(part.day, window.grouping)
        found.setdefault(key, Totals.empty()).add(part.totals)
    return [Bucket(day, bucket_label(day, window.grouping), found.get(day, Totals())) for day in window.buckets()]


@dataclass
class BreakdownRow:
    key: str
    label: str
    totals: Totals
    share: float = 0.0  # of the window's tokens, 0–1


def breakdown(
    window: Window, by: str, parts: list[Slice] | None = None, *, person_sums: dict | None = None
) -> list[BreakdownRow]:
    """Totals per model, agent or user, largest token use first.

    `person_sums` narrows what the per-person query sums (every sum by default); the
    totals it leaves out read as zero."""
    if by not in BREAKDOWNS:
        raise BadQuery("by", f"Unknown breakdown “{by[:20]}”; use one of: {', '.join(BREAKDOWNS)}.")
    column = BREAKDOWN_FIELDS[by]
    if by == "user":
        sums = person_sums if person_sums is not None else {**_SUMS, **_LATENCY_SUMS}
        rows = list(_rollups(window).order_by().values(column).annotate(**sums))
        grouped = {row[column]: Totals.from_row(row) for row in rows}
        labels = _user_labels(grouped)
    else:
        grouped = {}
        for part in slices(window) if parts is None else parts:
            grouped.setdefault(getattr(part, column), Totals.empty()).add(part.totals)
        labels = agent_names(grouped) if by == "agent" else {}
    out = [BreakdownRow(key=str(key), label=_label(by, key, labels), totals=t) for key, t in grouped.items()]
    out.sort(key=lambda r: (-r.totals.tokens, -r.totals.turns, r.label))
    grand = sum(r.totals.tokens for r in out)
    for row in out:
        row.share = row.totals.tokens / grand if grand else 0.0
    return out


_MODEL_VERSION = re.compile(r"-\d{8}(-v\d+(:\d+)?)?$")


def model_label(model_key: str) -> str:
    """A model key as people say it: "anthropic.claude-3-7-sonnet-20250219-v1:0" → "claude-3-7-sonnet"."""
    if not model_key:
        return "—"
    # Drop the vendor / region prefix ("us.anthropic.") — dots before the first hyphen only, so "gpt-4.1" stays.
    prefix = model_key.split("-", 1)[0]
    name = model_key[prefix.rfind(".") + 1 :]
    return _MODEL_VERSION.sub("", name)


def _label(by: str, key, labels: dict) -> str:
    if by == "model":
        return model_label(key)
    if by == "agent":
        return labels.get(key) or key or "—"
    return labels.get(key, "Deleted user" if key else "No user (API client)")


def agent_names(slugs) -> dict[str, str]:
    """The names of the agents the current tenant sees, by slug (usage records keep the slug,
    people know the name). A tenant's own agent wins over a shared one with the same slug; an
    agent deleted since has no name here, and callers show its slug."""
    from agents.models import Agent

    wanted = {s for s in slugs if s}
    if not wanted:
        return {}
    rows = Agent.objects.filter(slug__in=wanted).values_list("slug", "name", "owner_tenant_id")
    names: dict[str, str] = {}
    for slug, name, _owner in sorted(rows, key=lambda row: row[2] is not None):  # shared first, own last
        names[slug] = name
    return names


def _user_labels(keys) -> dict:
    from tenants.models import User

    ids = [k for k in keys if k]
    return {u.pk: u.display_name for u in User.objects.filter(pk__in=ids).only("pk", "email", "full_name")}


def person_names(user_ids) -> dict[int, str]:
    """Display names of the people among `user_ids` that the current tenant may see: its
    members, and anyone whose usage is the tenant's own (a former member's turns stay
    named). Ids can come from a URL, so any other user of the platform is left out, and
    the caller shows "—": a tenant never learns who another tenant's user id is."""
    from tenants.models import Membership, User

    ids = {int(i) for i in user_ids if i}
    if not ids:
        return {}
    members = Membership.objects.filter(user_id__in=ids).values_list("user_id", flat=True)
    users = UsageDaily.objects.filter(user_key__in=ids).values_list("user_key", flat=True).distinct()
    known = set(members) | set(users)
    return {u.pk: u.display_name for u in User.objects.filter(pk__in=known).only("pk", "email", "full_name")}


def throttle_breakdown(window: Window) -> list[dict]:
    """Refusals by limit kind in the window (from the refusal records, indexed by tenant and time)."""
    from django.db.models import Count

    start = dt.datetime.combine(window.start, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(window.end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    rows = (
        ThrottleEvent.objects.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("kind", "status")
        .annotate(n=Count("id"))
    )
    from billing.models import LimitKind

    labels = dict(LimitKind.choices)
    return sorted(
        (
            {"kind": r["kind"], "label": labels.get(r["kind"], r["kind"]), "status": r["status"], "count": r["n"]}
            for r in rows
        ),
        key=lambda r: -r["count"],
    )


# --- quota and budget, with a month-end forecast ------------------------------------------


@dataclass
class Gauge:
    """Month-to-date use of one allowance and where the month is heading.

    The forecast is linear on the recent run rate: use of the last
    FORECAST_TRAILING_DAYS full days plus today so far, divided by the time that
    covers, times the time left in the month, added to month-to-date. The
    trailing rate reacts to a change in usage within a week, which the
    month-to-date average would smear over the whole month, and it works on the
    1st of the month too.
    """

    used: Decimal
    limit: Decimal | None
    forecast: Decimal
    alert_percent: int | None = None  # soft alert threshold (budget only)
    # Whether the limit stops turns now, when `used >= limit` does not say it: the budget
    # caps the bill, which is the plan's fee from the first day, so a budget equal to the
    # fee is "reached" in money while the included tokens are still free to use.
    reached: bool | None = None
    # Whether the soft alert is due, when `percent >= alert_percent` does not say it: the
    # budget's alert is on the bill's variable part (billing.spend.alert_due), not the fee.
    alerting: bool | None = None

    @property
    def percent(self) -> float | None:
        return float(self.used * 100 / self.limit) if self.limit else None

    @property
    def forecast_percent(self) -> float | None:
        return float(self.forecast * 100 / self.limit) if self.limit else None

    @property
    def fill_percent(self) -> float:
        if self.state == "over":
            return 100.0  # also for a limit of 0, which has no percentage
        return min(100.0, self.percent or 0.0)

    @property
    def forecast_fill_percent(self) -> float:
        return min(100.0, self.forecast_percent or 0.0)

    @property
    def state(self) -> str:
        """none (no limit), ok, alert (past the soft threshold or heading past the limit)
        or over. A limit of 0 is a limit (a budget set to 0 stops every paid turn)."""
        if self.limit is None:
            return "none"
        if self.reached if self.reached is not None else self.used >= self.limit:
            return "over"
        if self.alerting is not None:
            alerted = self.alerting
        else:
            alerted = bool(self.alert_percent and (self.percent or 0) >= self.alert_percent)
        if alerted or self.forecast > self.limit:
            return "alert"
        return "ok"

    @property
    def css_state(self) -> str:
        return {"over": "is-danger", "alert": "is-warning"}.get(self.state, "")


@dataclass
class MonthOutlook:
    month: dt.date
    days_in_month: int
    elapsed_days: float
    tokens: Gauge
    budget: Gauge
    month_totals: Totals
    included_tokens: int
    overage_price_per_1k: Decimal
    overage_allowed: bool
    monthly_price: Decimal
    budget_row: TenantBudget | None
    bill: Bill  # the month's bill so far (plan fee + token overage): what the budget gauge shows
    forecast_bill: Bill
    budget_rule: str = BudgetRule.NONE
    # What the month is billed on (spend.month_plan): a prorated month pools its included tokens.
    plan: object = None

    @property
    def last_day(self) -> dt.date:
        return self.month + dt.timedelta(days=self.days_in_month - 1)

    @property
    def overage_tokens(self) -> int:
        return spend.overage_tokens(self.plan, int(self.tokens.used))

    @property
    def forecast_overage_tokens(self) -> int:
        return spend.overage_tokens(self.plan, int(self.tokens.forecast))

    @property
    def forecast_overage_charge(self) -> Decimal:
        return self.forecast_bill.overage

    @property
    def overage_charge(self) -> Decimal:
        # The bill's overage: in a prorated month, each period's at its own price (spend.bill).
        return self.bill.overage

    @property
    def tier_periods(self) -> list:
        """The month's tier periods when it has more than one (a tier change in it), else []:
        then overage is billed at the price of the period its tokens were used in
        (billing.invoices.pool_quota), so no single price describes the month."""
        periods = list(getattr(self.plan, "periods", ()))
        return periods if len(periods) > 1 else []


def forecast(used: Decimal, trailing: Decimal, now: dt.datetime) -> Decimal:
    """Month-end value: `used` so far plus the trailing daily rate times the time left.

    `trailing` is the use of the FORECAST_TRAILING_DAYS full days before today
    plus today so far.
    """
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today_fraction = Decimal(str(round((now - midnight).total_seconds() / 86400, 6)))
    covered = Decimal(FORECAST_TRAILING_DAYS) + today_fraction
    rate = trailing / covered if covered else Decimal("0")
    end = dt.datetime.combine(next_month(now.date()), dt.time.min, tzinfo=now.tzinfo)
    remaining = Decimal(str(round((end - now).total_seconds() / 86400, 6)))
    return used + rate * remaining


def month_outlook(tenant, now: dt.datetime | None = None, parts: Slices | None = None) -> MonthOutlook:
    """Quota and budget gauges of the month containing `now` (UTC).

    `parts` (the dashboard's day × model × agent slices) are used when they cover the
    month so far and the trailing week, which saves two queries; else two small aggregates.
    """
    now = (now or timezone.now()).astimezone(dt.UTC)
    month = month_start(now)
    day = now.date()
    trailing_from = day - dt.timedelta(days=FORECAST_TRAILING_DAYS)
    if parts is not None and _covers(parts, min(month, trailing_from), day):
        month_totals, trailing = Totals.empty(), Totals.empty()
        for part in parts:
            if month <= part.day <= day:
                month_totals.add(part.totals)
            if trailing_from <= part.day <= day:
                trailing.add(part.totals)
        trailing_tokens = Decimal(trailing.tokens)
    else:
        month_row = UsageDaily.objects.filter(day__gte=month, day__lte=day).aggregate(**_SUMS, **_LATENCY_SUMS)
        trailing_row = UsageDaily.objects.filter(day__gte=trailing_from, day__lte=day).aggregate(
            input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens")
        )
        month_totals = Totals.from_row(month_row)
        trailing_tokens = Decimal(_int(trailing_row["input_tokens"]) + _int(trailing_row["output_tokens"]))
    tier = tenant.tier
    budget_row = TenantBudget.objects.first()
    budget_limit = budget_row.monthly_budget if budget_row is not None else None
    used_tokens = Decimal(month_totals.tokens)
    # The month's plan: its tier periods, prorated when the tenant was moved or onboarded in it.
    plan = spend.month_plan(tenant, month)
    tokens = Gauge(
        used=used_tokens,
        limit=Decimal(plan.included_tokens) if tier.included_tokens else None,
        forecast=forecast(used_tokens, trailing_tokens, now).quantize(Decimal("1")),
    )
    # The budget caps the bill (billing.spend), so its gauge is in the money the tenant
    # pays: the plan's fee plus overage on the tokens so far, and on the forecast tokens.
    so_far = spend.bill(plan, month_totals.tokens)
    forecast_bill = spend.bill(plan, int(tokens.forecast))
    ceiling = spend.budget_token_ceiling(plan, budget_limit)
    budget = Gauge(
        used=so_far.total,
        limit=budget_limit,
        forecast=forecast_bill.total,
        alert_percent=budget_row.soft_alert_percent if budget_row else None,
        reached=ceiling is not None and month_totals.tokens >= ceiling,
        alerting=spend.alert_due(so_far, budget_limit, budget_row.soft_alert_percent) if budget_row else None,
    )
    days_in_month = (next_month(month) - month).days
    elapsed = (now - dt.datetime.combine(month, dt.time.min, tzinfo=dt.UTC)).total_seconds() / 86400
    return MonthOutlook(
        month=month,
        days_in_month=days_in_month,
        elapsed_days=elapsed,
        tokens=tokens,
        budget=budget,
        month_totals=month_totals,
        included_tokens=plan.included_tokens,
        overage_price_per_1k=tier.overage_price_per_1k_tokens,
        overage_allowed=getattr(tier, "overage_allowed", True),
        monthly_price=tier.monthly_price,
        budget_row=budget_row,
        bill=so_far,
        forecast_bill=forecast_bill,
        budget_rule=spend.budget_rule(tier, budget_limit),
        plan=plan,
    )


def _covers(parts: Slices, first: dt.date, last: dt.date) -> bool:
    """Whether the slices were read for a window holding every day first..last."""
    return parts.window_start <= first and parts.window_end >= last


def overage_charge(overage_tokens: int, price_per_1k: Decimal) -> Decimal:
    """What overage tokens are billed: pro rata per 1,000 tokens, rounded to the cent (half up)."""
    return (Decimal(overage_tokens) * price_per_1k / 1000).quantize(CENTS, rounding=ROUND_HALF_UP)


# --- the whole tenant dashboard -------------------------------------------------------------


@dataclass
class Dashboard:
    window: Window
    totals: Totals
    series: list[Bucket]
    by_model: list[BreakdownRow]
    by_agent: list[BreakdownRow]
    by_user: list[BreakdownRow]  # turns, tokens and cost only (_PAGE_PERSON_SUMS)
    outlook: MonthOutlook
    throttles: list[dict]


def tenant_dashboard(tenant, window: Window, now: dt.datetime | None = None) -> Dashboard:
    """Everything the tenant dashboard shows: seven aggregate queries over the roll-ups
    (window totals come from the series, so no extra query) and one over refusals."""
    # One transaction: on PostgreSQL the tenant is set once for all the queries instead of
    # once per statement (portal/db), and every number comes from the same moment.
    with transaction.atomic():
        parts = slices(window)
        series = timeseries(window, parts)
        return Dashboard(
            window=window,
            totals=_sum_buckets(series),
            series=series,
            by_model=breakdown(window, "model", parts),
            by_agent=breakdown(window, "agent", parts),
            by_user=breakdown(window, "user", person_sums=_PAGE_PERSON_SUMS),
            outlook=month_outlook(tenant, now, parts),
            throttles=throttle_breakdown(window),
        )


def _sum_buckets(series: list[Bucket]) -> Totals:
    total = Totals.empty()
    for bucket in series:
        total.add(bucket.totals)
    return total


# --- drill-down: raw events, a page at a time ------------------------------------------------


@dataclass
class EventsPage:
    events: list
    page: int
    has_next: bool
    per_page: int

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def events_page(window: Window, *, page: int = 1, per_page: int = 50, **filters) -> EventsPage:
    """Raw usage events of the window, newest first. No COUNT(*): a tenant may have
    millions, so the page asks for one row more than it shows to know if there is a next."""
    start = dt.datetime.combine(window.start, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(window.end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    qs = UsageEvent.objects.filter(created_at__gte=start, created_at__lt=end)
    if filters.get("model"):
        qs = qs.filter(model_key=filters["model"])
    if filters.get("agent"):
        qs = qs.filter(agent_slug=filters["agent"])
    if filters.get("user"):
        qs = qs.filter(user_id=filters["user"])
    if filters.get("outcome"):
        qs = qs.filter(outcome=filters["outcome"])
    page = max(1, page)
    offset = (page - 1) * per_page
    rows = list(qs.order_by("-created_at", "-id")[offset : offset + per_page + 1])
    return EventsPage(events=rows[:per_page], page=page, has_next=len(rows) > per_page, per_page=per_page)


# --- the operator's table: every tenant, one month -------------------------------------------

OPERATOR_SORTS = {
    "name": lambda r: r.tenant.name.lower(),
    "tier": lambda r: (r.tenant.tier.monthly_price, r.tenant.tier.name),
    "mrr": lambda r: r.mrr,
    "tokens": lambda r: r.tokens,
    "cost": lambda r: r.cost,
    "revenue": lambda r: r.revenue,
    "margin": lambda r: r.margin,
    "margin_pct": lambda r: r.margin_percent if r.margin_percent is not None else Decimal("-1e9"),
    "throttled": lambda r: r.throttled,
    # A budget of 0 has no percentage but is the tightest of all: it sorts above every other.
    "budget": lambda r: r.budget_percent if r.budget_percent is not None else (math.inf if r.budget == 0 else -1.0),
}


_PLAN_FIELDS = ("plan_name", "plan_monthly_price", "plan_included_tokens", "plan_overage_price_per_1k_tokens")


@dataclass
class OperatorRow:
    tenant: object
    tokens: int
    cost: Decimal
    turns: int
    throttled: int
    blocked: int
    budget: Decimal | None
    budget_alert_percent: int | None
    # Whether the month is billed at all (billing.invoices.owes_invoice): a tenant suspended
    # before the month, with no usage in it, owes nothing and has no invoice for it.
    billable: bool = True
    # The plan terms the month is billed at (billing.invoices.plan_terms); None: the tier now.
    terms: object = None

    @property
    def plan(self):
        return self.terms if self.terms is not None else self.tenant.tier

    @property
    def mrr(self) -> Decimal:
        return self.plan.monthly_price if self.billable else Decimal("0.00")

    @property
    def overage_tokens(self) -> int:
        """The month's tokens billed as overage: past its (pooled, when prorated) included tokens."""
        if not self.billable:
            return 0
        return spend.overage_tokens(self.plan, self.tokens)

    @property
    def prorated(self) -> bool:
        return isinstance(self.plan, spend.MonthPlan)

    @property
    def included_tokens(self) -> int:
        """The month's quota: its pooled included tokens when prorated (spend.MonthPlan.pool)."""
        return self.plan.pool if self.prorated else self.plan.included_tokens

    @property
    def current_overage_tokens(self) -> int:
        # The overage priced at the plan's (the current period's) price; the earlier periods'
        # overage is priced already (closed_overage).
        return max(0, self.tokens - self.plan.included_tokens) if self.billable else 0

    @property
    def overage(self) -> Decimal:
        # A month whose tier changed (spend.MonthPlan) adds the overage of its earlier tier periods.
        closed = getattr(self.plan, "closed_overage", Decimal("0.00")) if self.billable else Decimal("0.00")
        return overage_charge(self.current_overage_tokens, self.plan.overage_price_per_1k_tokens) + closed

    @property
    def revenue(self) -> Decimal:
        """What the month bills: the tier's base fee plus token overage (as the invoice does)."""
        return self.mrr + self.overage

    @property
    def cost_cents(self) -> Decimal:
        return self.cost.quantize(CENTS, rounding=ROUND_HALF_UP)

    @property
    def margin(self) -> Decimal:
        """Gross margin: revenue minus the cost of the usage (tokens, tools, runtime), to the cent."""
        return self.revenue - self.cost_cents

    @property
    def margin_percent(self) -> Decimal | None:
        if not self.revenue:
            return None
        return (self.margin * 100 / self.revenue).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    @property
    def budget_percent(self) -> float | None:
        """The month's bill (revenue: what the tenant pays) as a share of its budget, which
        caps that bill (billing.spend) — not the cost of the usage."""
        return float(self.revenue * 100 / self.budget) if self.budget else None

    @property
    def budget_status(self) -> str:
        """none, ok, alert or stop. Stop: admission refuses the tenant's turns, its tokens
        having reached the budget's token ceiling (at once for a budget below the fee, e.g.
        0), as the tenant's own gauge says."""
        if self.budget is None:
            return "none"
        plan = self.plan if isinstance(self.plan, spend.MonthPlan) else self.tenant.tier
        ceiling = spend.budget_token_ceiling(plan, self.budget)
        if ceiling is not None and self.tokens >= ceiling:
            return "stop"
        # The tenant's soft alert (billing.spend.alert_due): on overage past the alert share of
        # what the budget leaves above the fee, never on the fee alone.
        so_far = Bill(tokens=self.tokens, fee=self.mrr, overage=self.overage, total=self.revenue)
        if self.budget_alert_percent and spend.alert_due(so_far, self.budget, self.budget_alert_percent):
            return "alert"
        return "ok"


def operator_rows(
    month: dt.date, *, query: str = "", sort: str = "revenue", descending: bool = True
) -> list[OperatorRow]:
    """One row per tenant for `month`: two aggregates (roll-ups by tenant, budgets), sorted in
    Python because revenue and margin are computed per tier. Call inside all_tenants()."""
    from tenants.models import Tenant

    if sort not in OPERATOR_SORTS:
        raise BadQuery("sort", f"Unknown sort “{sort[:20]}”; use one of: {', '.join(OPERATOR_SORTS)}.")
    # Only what the table shows: a tenant row also carries JSON settings that would cost
    # more to decode for 1,000 tenants than the whole usage query.
    tenants = (
        Tenant.objects.select_related("tier")
        .only(
            "pk",
            "slug",
            "name",
            "status",
            "deployment_model",
            "created_at",  # a tenant onboarded during the month is billed from then
            "tier__name",
            "tier__slug",
            "tier__monthly_price",
            "tier__included_tokens",
            "tier__overage_price_per_1k_tokens",
            "tier__overage_allowed",
        )
        .order_by("name")
    )
    if query:
        tenants = tenants.filter(Q(name__icontains=query) | Q(slug__icontains=query))
    with transaction.atomic():
        return _operator_rows(tenants, month, sort, descending)


def _operator_rows(tenants, month: dt.date, sort: str, descending: bool) -> list[OperatorRow]:
    from tenants.models import TenantStatus

    if connection.vendor == "postgresql":
        # Row-level security hides the row count from the planner (it expects one row), so it
        # sorts ~100k roll-up rows for the GROUP BY; give that sort memory instead of disk.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '32MB'")
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    usage = {
        row["tenant_id"]: row
        for row in UsageDaily.unscoped.filter(day__gte=month, day__lt=next_month(month))
        .order_by()
        .values("tenant_id")
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            turns=Sum("turns"),
            throttled=Sum("throttled_requests"),
            blocked=Sum("blocked_turns"),
        )
    }
    budgets = {
        b["tenant_id"]: b for b in TenantBudget.unscoped.values("tenant_id", "monthly_budget", "soft_alert_percent")
    }
    invoices = {i.tenant_id: i for i in Invoice.unscoped.filter(period=month).only("tenant_id", *_PLAN_FIELDS)}
    # Every tenant's tier changes in the month at once (cross-tenant, unscoped: we are in
    # all_tenants), not a query (or three) per tenant.
    tiers = month_tiers(month)
    rows = []
    for tenant in tenants:
        u = usage.get(tenant.pk, {})
        b = budgets.get(tenant.pk, {})
        tokens, cost = _int(u.get("input_tokens")) + _int(u.get("output_tokens")), _money(u.get("cost"))
        rows.append(
            OperatorRow(
                tenant=tenant,
                tokens=tokens,
                cost=cost,
                turns=_int(u.get("turns")),
                throttled=_int(u.get("throttled")),
                blocked=_int(u.get("blocked")),
                budget=b.get("monthly_budget"),
                budget_alert_percent=b.get("soft_alert_percent"),
                billable=owes_invoice(
                    active=tenant.status == TenantStatus.ACTIVE,
                    tokens=tokens,
                    cost=cost,
                    invoiced=tenant.pk in invoices,
                ),
                terms=spend.month_plan(
                    tenant, month, plan_terms(tenant, month, invoices.get(tenant.pk), month=tiers), tiers=tiers
                ),
            )
        )
    rows.sort(key=OPERATOR_SORTS[sort], reverse=descending)
    return rows


def operator_row(tenant, month: dt.date) -> OperatorRow:
    """The operator's numbers for one tenant (in that tenant's context): same maths as the table."""
    from tenants.models import TenantStatus

    u = UsageDaily.objects.filter(day__gte=month, day__lt=next_month(month)).aggregate(
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost"),
        turns=Sum("turns"),
        throttled=Sum("throttled_requests"),
        blocked=Sum("blocked_turns"),
    )
    budget = TenantBudget.objects.first()
    invoice = Invoice.objects.filter(period=month).first()
    tokens, cost = _int(u["input_tokens"]) + _int(u["output_tokens"]), _money(u["cost"])
    return OperatorRow(
        tenant=tenant,
        tokens=tokens,
        cost=cost,
        turns=_int(u["turns"]),
        throttled=_int(u["throttled"]),
        blocked=_int(u["blocked"]),
        budget=budget.monthly_budget if budget else None,
        budget_alert_percent=budget.soft_alert_percent if budget else None,
        billable=owes_invoice(
            active=tenant.status == TenantStatus.ACTIVE,
            tokens=tokens,
            cost=cost,
            invoiced=invoice is not None,
        ),
        terms=spend.month_plan(tenant, month, plan_terms(tenant, month, invoice)),
    )


@dataclass
class OperatorTotals:
    tenants: int
    mrr: Decimal
    revenue: Decimal
    cost: Decimal
    margin: Decimal
    tokens: int
    throttled: int

    @property
    def margin_percent(self) -> Decimal | None:
        if not self.revenue:
            return None
        return (self.margin * 100 / self.revenue).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def operator_totals(rows: list[OperatorRow]) -> OperatorTotals:
    return OperatorTotals(
        tenants=len(rows),
        mrr=sum((r.mrr for r in rows), Decimal("0")),
        revenue=sum((r.revenue for r in rows), Decimal("0")),
        cost=sum((r.cost_cents for r in rows), Decimal("0")),
        margin=sum((r.margin for r in rows), Decimal("0")),
        tokens=sum(r.tokens for r in rows),
        throttled=sum(r.throttled for r in rows),
    )


def parse_month(value: str | None, field_name: str = "month") -> dt.date:
    """`YYYY-MM` → the first day of that month; empty → this month."""
    if not value:
        return month_start()
    try:
        year, month = value.strip().split("-")
        first = dt.date(int(year), int(month), 1)
    except (ValueError, AttributeError, TypeError):
        raise BadQuery(field_name, f"“{str(value)[:20]}” is not a month; use YYYY-MM.") from None
    if not EARLIEST <= first <= LATEST:
        raise BadQuery(field_name, f"Choose a month between {EARLIEST:%Y-%m} and {LATEST:%Y-%m}.")
    return first


def chart_number(value) -> float | int | None:
    """Numbers as the chart script wants them (JSON has no Decimal)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value.quantize(Decimal("0.0001")))
    return value
