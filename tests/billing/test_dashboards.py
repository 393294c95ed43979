"""The dashboard's numbers: roll-ups only, and always equal to the raw events they summarise."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing import dashboards as d
from billing import spend
from billing.models import LATENCY_BUCKETS_MS, TenantBudget, UsageEvent
from tenants.context import tenant_context
from tests.billing.usage_helpers import at, record_throttle, record_usage, today

pytestmark = pytest.mark.django_db


def scatter_usage(world, days: int = 12, per_day: int = 3, seed: int = 7):
    """Events for A over `days` days, two models, two agents, three people; and some for B."""
    rng = random.Random(seed)
    people = [world.a.owner, world.a.member, None]
    for offset in range(days):
        day = today() - dt.timedelta(days=offset)
        for n in range(per_day):
            record_usage(
                world.a.tenant,
                at(day, hour=1 + n),
                user=rng.choice(people),
                model=rng.choice(["offline-small", "big-model"]),
                agent=rng.choice(["helpdesk", "analyst"]),
                input_tokens=rng.randint(10, 5000),
                output_tokens=rng.randint(1, 2000),
                cost=Decimal(rng.randint(1, 99999)) / Decimal("1000000"),
                latency_ms=rng.choice([120, 480, 900, 1800, 4200, 9000, 25000, 45000, None]),
                outcome=rng.choice(["done", "done", "done", "failed", "blocked"]),
            )
    # Another tenant's usage on the same days must never show up.
    for offset in range(days):
        record_usage(world.b.tenant, at(today() - dt.timedelta(days=offset)), input_tokens=77_777, cost="5")


def raw_sums(window: d.Window) -> dict:
    start = at(window.start, 0)
    end = at(window.end + dt.timedelta(days=1), 0)
    return UsageEvent.objects.filter(created_at__gte=start, created_at__lt=end).aggregate(
        turns=Count("id"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost"),
        failed=Count("id", filter=Q(outcome="failed")),
        blocked=Count("id", filter=Q(outcome="blocked")),
    )


def test_it_totals_the_window_exactly_as_the_raw_events_do(world):
    scatter_usage(world)
    window = d.Window(start=today() - dt.timedelta(days=6), end=today())
    with tenant_context(world.a.tenant):
        raw = raw_sums(window)
        board = d.tenant_dashboard(world.a.tenant, window)
    assert board.totals.turns == raw["turns"]
    assert board.totals.input_tokens == raw["input_tokens"]
    assert board.totals.output_tokens == raw["output_tokens"]
    assert board.totals.cost == raw["cost"]
    assert board.totals.failed_turns == raw["failed"]
    assert board.totals.blocked_turns == raw["blocked"]


def test_every_view_of_the_window_adds_up_to_the_same_total(world):
    scatter_usage(world)
    window = d.Window(start=today() - dt.timedelta(days=9), end=today(), grouping="week")
    with tenant_context(world.a.tenant):
        raw = raw_sums(window)
        direct = d.totals(window)
        series = d.timeseries(window)
        breakdowns = {by: d.breakdown(window, by) for by in d.BREAKDOWNS}
    assert direct.tokens == raw["input_tokens"] + raw["output_tokens"]
    assert direct.cost == raw["cost"]
    assert sum(b.totals.tokens for b in series) == direct.tokens
    assert sum((b.totals.cost for b in series), Decimal("0")) == direct.cost
    for by, rows in breakdowns.items():
        assert sum(r.totals.tokens for r in rows) == direct.tokens, by
        assert sum((r.totals.cost for r in rows), Decimal("0")) == direct.cost, by
        assert sum(r.totals.turns for r in rows) == direct.turns, by


def test_it_breaks_usage_down_per_person_with_their_names_largest_first(world):
    record_usage(world.a.tenant, at(today()), user=world.a.owner, input_tokens=100, output_tokens=0)
    record_usage(world.a.tenant, at(today()), user=world.a.member, input_tokens=900, output_tokens=100)
    record_usage(world.a.tenant, at(today()), user=None, input_tokens=5, output_tokens=0)
    with tenant_context(world.a.tenant):
        rows = d.breakdown(d.Window(today(), today()), "user")
    assert [(r.label, r.totals.tokens) for r in rows] == [
        ("Alpha Member", 1000),
        ("Alpha Owner", 100),
        ("No user (API client)", 5),
    ]
    assert rows[0].share == pytest.approx(1000 / 1105)


def test_the_pages_people_carry_what_the_page_shows_as_the_full_breakdown_does(world):
    # The dashboard sums only turns, tokens and cost per person (the page shows nothing
    # else of them); those must match the full per-person breakdown the API and CSV use.
    scatter_usage(world)
    window = d.Window(start=today() - dt.timedelta(days=9), end=today())
    with tenant_context(world.a.tenant):
        page = d.tenant_dashboard(world.a.tenant, window).by_user
        full = d.breakdown(window, "user")
    shown = lambda rows: [(r.key, r.label, r.totals.turns, r.totals.tokens, r.totals.cost, r.share) for r in rows]  # noqa: E731
    assert len(full) > 1
    assert shown(page) == shown(full)


def test_it_reads_only_the_daily_rollups_never_the_raw_events(world):
    scatter_usage(world, days=3)
    window = d.Window(start=today() - dt.timedelta(days=29), end=today())
    with tenant_context(world.a.tenant), CaptureQueriesContext(connection) as queries:
        d.tenant_dashboard(world.a.tenant, window)
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "billing_usagedaily" in sql
    assert "billing_usageevent" not in sql
    reads = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and "set_config" not in q["sql"]
    ]
    assert len(reads) <= 9  # a handful of aggregates, whatever the window holds


def test_timeseries_has_a_zero_bucket_for_every_quiet_day_week_or_month(world):
    monday = today() - dt.timedelta(days=today().weekday() + 14)
    record_usage(world.a.tenant, at(monday), input_tokens=10, output_tokens=0)
    record_usage(world.a.tenant, at(monday + dt.timedelta(days=6)), input_tokens=20, output_tokens=0)  # Sunday
    record_usage(world.a.tenant, at(monday + dt.timedelta(days=7)), input_tokens=40, output_tokens=0)  # next Monday
    window = d.Window(start=monday, end=monday + dt.timedelta(days=13), grouping="day")
    with tenant_context(world.a.tenant):
        days = d.timeseries(window)
        weeks = d.timeseries(d.Window(start=monday, end=monday + dt.timedelta(days=13), grouping="week"))
    assert len(days) == 14
    assert [b.totals.tokens for b in days][:8] == [10, 0, 0, 0, 0, 0, 20, 40]
    assert [(b.start, b.totals.tokens) for b in weeks] == [(monday, 30), (monday + dt.timedelta(days=7), 40)]


def test_latency_percentiles_fall_in_the_bucket_of_the_raw_percentile(world):
    latencies = [100] * 50 + [700] * 40 + [3000] * 8 + [20000] * 2
    for ms in latencies:
        record_usage(world.a.tenant, at(today()), latency_ms=ms)
    with tenant_context(world.a.tenant):
        totals = d.totals(d.Window(today(), today()))
    bounds = [0, *LATENCY_BUCKETS_MS]
    # raw p50 = 100 ms (bucket ≤ 250), raw p95 = 3000 ms (bucket 2000–5000)
    assert bounds[0] <= totals.p50_ms <= bounds[1]
    assert 2000 <= totals.p95_ms <= 5000
    assert totals.samples == 100


def test_error_rate_counts_failed_turns_among_those_that_ran(world):
    for outcome in ["done"] * 7 + ["failed"] * 2 + ["blocked"]:
        record_usage(world.a.tenant, at(today()), outcome=outcome, latency_ms=None if outcome == "blocked" else 500)
    with tenant_context(world.a.tenant):
        totals = d.totals(d.Window(today(), today()))
    assert totals.turns == 10
    assert totals.error_rate == pytest.approx(2 / 9)


def test_throttled_requests_are_counted_per_day_from_the_rollups(world):
    record_throttle(world.a.tenant, at(today()))
    record_throttle(world.a.tenant, at(today()), kind="budget")
    record_throttle(world.b.tenant, at(today()))
    with tenant_context(world.a.tenant):
        window = d.Window(today(), today())
        assert d.totals(window).throttled_requests == 2
        kinds = {row["kind"]: row["count"] for row in d.throttle_breakdown(window)}
    assert kinds == {"rpm": 1, "budget": 1}


# --- the month-end forecast ---------------------------------------------------------------------


def test_forecast_extends_the_trailing_week_rate_to_month_end():
    now = dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)
    # 8,000 used in the 7 full days before today plus today's half day: 7.5 days.
    result = d.forecast(Decimal(15000), Decimal(8000), now)
    rate = Decimal(8000) / Decimal("7.5")
    assert result == Decimal(15000) + rate * Decimal("15.5")  # 15.5 days from 15 Nov noon to 1 Dec


def test_month_outlook_forecasts_quota_and_the_bill_against_the_budget_from_the_rollups(world):
    tier = world.a.tenant.tier
    tier.overage_price_per_1k_tokens = Decimal("0.50")  # $100 fee, 1,000 tokens included
    tier.save()
    now = timezone.now().astimezone(dt.UTC)
    month = now.date().replace(day=1)
    for offset in range((now.date() - month).days + 1):
        record_usage(
            world.a.tenant, at(month + dt.timedelta(days=offset), 0), input_tokens=600, output_tokens=400, cost="2"
        )
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("1000"), soft_alert_percent=80)
        outlook = d.month_outlook(world.a.tenant, now)
    days_so_far = (now.date() - month).days + 1
    assert outlook.tokens.used == Decimal(1000 * days_so_far)
    trailing_days = min(days_so_far, d.FORECAST_TRAILING_DAYS + 1)
    expected = d.forecast(Decimal(1000 * days_so_far), Decimal(1000 * trailing_days), now).quantize(Decimal("1"))
    assert outlook.tokens.forecast == expected
    assert outlook.tokens.limit == Decimal(world.a.tenant.tier.included_tokens)
    # The budget gauge is the bill — the fee plus $0.50 per 1k tokens past the first 1,000 —
    # not the price book's cost ($2 a day).
    billed = Decimal("100.00") + Decimal(1000 * days_so_far - 1000) * Decimal("0.50") / 1000
    assert outlook.budget.used == outlook.bill.total == billed.quantize(Decimal("0.01"))
    assert (outlook.bill.fee, outlook.bill.tokens) == (Decimal("100.00"), 1000 * days_so_far)
    assert outlook.budget.forecast == outlook.forecast_bill.total == spend.bill(tier, int(expected)).total
    assert outlook.budget.limit == Decimal("1000")


def test_a_budget_at_the_fee_is_full_in_money_but_not_reached_while_tokens_are_included(world):
    tier = world.a.tenant.tier
    tier.overage_price_per_1k_tokens = Decimal("0.50")
    tier.included_tokens = 1_000_000
    tier.save()
    record_usage(world.a.tenant, at(today(), 0), input_tokens=600, output_tokens=400)
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("100.00"))
        outlook = d.month_outlook(world.a.tenant)
    assert outlook.budget.used == outlook.budget.limit == Decimal("100.00")
    assert outlook.budget.state != "over"  # admission still takes turns inside the included tokens


def test_gauge_states_follow_the_soft_alert_the_forecast_and_the_hard_stop():
    ok = d.Gauge(used=Decimal("10"), limit=Decimal("100"), forecast=Decimal("50"), alert_percent=80)
    soft = d.Gauge(used=Decimal("85"), limit=Decimal("100"), forecast=Decimal("95"), alert_percent=80)
    heading_over = d.Gauge(used=Decimal("40"), limit=Decimal("100"), forecast=Decimal("130"), alert_percent=80)
    over = d.Gauge(used=Decimal("100"), limit=Decimal("100"), forecast=Decimal("140"), alert_percent=80)
    none = d.Gauge(used=Decimal("5"), limit=None, forecast=Decimal("9"))
    assert [g.state for g in (ok, soft, heading_over, over, none)] == ["ok", "alert", "alert", "over", "none"]
    assert over.fill_percent == 100.0


# --- parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),
        ({"grouping": "fortnight"}, "grouping"),
        ({"range": "forever"}, "range"),
    ],
)
def test_it_refuses_parameters_that_make_no_sense(params, field):
    with pytest.raises(d.BadQuery) as caught:
        d.parse_window(params)
    assert caught.value.field == field


def test_presets_cover_the_expected_days():
    month = d.parse_window({"range": "month"})
    assert month.start == today().replace(day=1) and month.end == today()
    last = d.parse_window({"range": "last-month"})
    assert last.end == today().replace(day=1) - dt.timedelta(days=1) and last.start.day == 1
    assert d.parse_window({}).days == 30


def test_the_outlook_folded_from_the_dashboards_slices_equals_its_own_queries(world):
    scatter_usage(world, days=40, per_day=2)
    now = timezone.now()
    day = now.astimezone(dt.UTC).date()
    window = d.Window(start=day - dt.timedelta(days=39), end=day)
    with tenant_context(world.a.tenant):
        parts = d.slices(window)
        folded = d.month_outlook(world.a.tenant, now, parts)
        queried = d.month_outlook(world.a.tenant, now)
        short = d.month_outlook(
            world.a.tenant, now, d.slices(d.Window(start=today(), end=today()))
        )  # too short: queries
    for outlook in (folded, short):
        assert (outlook.tokens.used, outlook.tokens.forecast) == (queried.tokens.used, queried.tokens.forecast)
        assert (outlook.budget.used, outlook.budget.forecast) == (queried.budget.used, queried.budget.forecast)
