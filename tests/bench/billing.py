"""Speed of the usage dashboards: `python -m tests.bench.billing [--quick] [--databases sqlite,postgres]`.

For each database (a SQLite file under var/bench/billing_<db>/, and a PostgreSQL
database of its own, created as the owner role and dropped afterwards) a child
process migrates, then generates:

* one tenant with 10 million usage events (``--quick``: 200,000) spread over 90
  days, 3 models × 4 agents × 50 people — written by one ``INSERT … SELECT`` from
  ``generate_series`` (PostgreSQL) or a recursive CTE (SQLite) — and its daily
  roll-ups built from exactly those rows by one ``INSERT … SELECT … GROUP BY``;
* 1,000 more tenants with a month of roll-ups each, a third with a budget.

It then times the real query functions the pages call (never the raw events):

* ``dashboard_ms_p50`` — billing.dashboards.tenant_dashboard() for the default
  30-day window of the 10M-event tenant (goal ≤ 50 ms), plus the whole page
  (view + template) as ``dashboard_view_ms_p50``;
* ``operator_table_ms_p50`` — operator_rows() + operator_totals() for 1,001
  tenants (goal ≤ 200 ms), plus the operator page as ``operator_view_ms_p50``.

Results are MERGED into var/bench/billing.json (other benchmarks write other keys
there, e.g. noisy_neighbour_p95_ratio) and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.common import (
    VAR_BENCH,
    create_database,
    django_env,
    drop_database,
    log,
    postgres_unreachable,
    python_speed_ms,
    summary_ms,
)

RESULT = VAR_BENCH / "billing.json"
GOALS = {"dashboard_ms_p50": 50.0, "operator_table_ms_p50": 200.0}
DAYS = 90
MODELS = ("anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0", "offline-small")
AGENTS = ("helpdesk", "analyst", "writer", "tps-reports")
PEOPLE = 50
OTHER_TENANTS = 1000


# --- the child: generate, then measure --------------------------------------------------------


def _events_sql(vendor: str) -> str:
    """One statement writing n = 1..N events for the bench tenant (parameters: see _generate)."""
    columns = (
        "tenant_id, invocation_id, kind, user_id, agent_slug, model_key, outcome, input_tokens, output_tokens,"
        " tool_calls, runtime_seconds, guardrail_checks, latency_ms, cost, price_book_version, estimated, created_at"
    )
    models = " ".join(f"WHEN {i} THEN '{m}'" for i, m in enumerate(MODELS))
    agents = " ".join(f"WHEN {i} THEN '{a}'" for i, a in enumerate(AGENTS))
    # Deterministic but varied numbers from n: a few heavy people, slow and failed turns.
    body = """
        %(tenant)s,
        {uuid},
        'agent_turn',
        %(first_user)s + ((n * 7) %% {people}),
        CASE ((n / 3) %% 4) {agents} END,
        CASE (n %% 3) {models} END,
        CASE WHEN n %% 97 = 0 THEN 'failed' WHEN n %% 211 = 0 THEN 'blocked' ELSE 'done' END,
        200 + ((n * 37) %% 3000),
        50 + ((n * 53) %% 1200),
        (n %% 3),
        1.5,
        2,
        300 + ((n * 97) %% 9000) + CASE WHEN n %% 50 = 0 THEN 20000 ELSE 0 END,
        ROUND((200 + ((n * 37) %% 3000)) * 0.000003 + (50 + ((n * 53) %% 1200)) * 0.000015, 8),
        1,
        {false},
        {created}
    """.format(
        people=PEOPLE,
        agents=agents,
        models=models,
        uuid="lpad(to_hex(n), 32, '0')::uuid" if vendor == "postgresql" else "printf('%%032x', n)",
        false="false" if vendor == "postgresql" else "0",
        created=(
            "to_timestamp(%(start)s + n * %(step)s)"
            if vendor == "postgresql"
            else "datetime(%(start)s + n * %(step)s, 'unixepoch')"
        ),
    )
    if vendor == "postgresql":
        source = "FROM generate_series(1, %(count)s) AS n"
        return f"INSERT INTO billing_usageevent ({columns}) SELECT {body} {source}"  # noqa: S608
    return (
        f"INSERT INTO billing_usageevent ({columns}) "  # noqa: S608
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %(count)s) "
        f"SELECT {body} FROM seq"
    )


def _rollup_sql(vendor: str) -> str:
    """The bench tenant's daily roll-ups, summed from its events (what metering keeps up to date)."""
    from billing.models import LATENCY_BUCKETS_MS

    day = "(created_at AT TIME ZONE 'UTC')::date" if vendor == "postgresql" else "date(created_at)"
    buckets, lower = [], None
    for bound in LATENCY_BUCKETS_MS:
        low = f"latency_ms > {lower} AND " if lower is not None else ""
        buckets.append(f"SUM(CASE WHEN {low}latency_ms <= {bound} THEN 1 ELSE 0 END)")
        lower = bound
    buckets.append(f"SUM(CASE WHEN latency_ms > {lower} THEN 1 ELSE 0 END)")
    bucket_columns = ", ".join(f"lat_le_{b}" for b in LATENCY_BUCKETS_MS) + ", lat_gt_30000"
    return f"""
        INSERT INTO billing_usagedaily (tenant_id, day, model_key, agent_slug, user_key, turns, failed_turns,
            cancelled_turns, blocked_turns, estimated_turns, throttled_requests, input_tokens, output_tokens,
            tool_calls, runtime_seconds, guardrail_checks, cost, latency_ms_sum, {bucket_columns})
        SELECT tenant_id, {day}, model_key, agent_slug, COALESCE(user_id, 0), COUNT(*),
            SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END), SUM(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END),
            SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END), 0, 0, SUM(input_tokens), SUM(output_tokens),
            SUM(tool_calls), SUM(runtime_seconds), SUM(guardrail_checks), SUM(cost), SUM(COALESCE(latency_ms, 0)),
            {", ".join(buckets)}
        FROM billing_usageevent WHERE tenant_id = %(tenant)s
        GROUP BY tenant_id, {day}, model_key, agent_slug, COALESCE(user_id, 0)
    """  # noqa: S608 (identifiers and numbers are ours; values are parameters)


def _other_tenants_sql(vendor: str) -> str:
    """A month of roll-ups (one row per day × model) for every `op-…` tenant."""
    models = " UNION ALL ".join(f"SELECT '{m}' AS key" for m in MODELS)
    if vendor == "postgresql":
        days = "generate_series(%(month)s::date, %(today)s::date, interval '1 day') AS d(day)"
        day = "d.day::date"
    else:
        days = (
            "(WITH RECURSIVE dd(day) AS (SELECT date(%(month)s) UNION ALL SELECT date(day, '+1 day') FROM dd"
            " WHERE day < date(%(today)s)) SELECT day FROM dd) AS d"
        )
        day = "d.day"
    return f"""
        INSERT INTO billing_usagedaily (tenant_id, day, model_key, agent_slug, user_key, turns, failed_turns,
            cancelled_turns, blocked_turns, estimated_turns, throttled_requests, input_tokens, output_tokens,
            tool_calls, runtime_seconds, guardrail_checks, cost, latency_ms_sum, lat_le_250, lat_le_500, lat_le_1000,
            lat_le_2000, lat_le_5000, lat_le_10000, lat_le_30000, lat_gt_30000)
        SELECT t.id, {day}, m.key, 'helpdesk', 0, 40 + t.id %% 300, t.id %% 3, 0, t.id %% 2, 0, t.id %% 5,
            (t.id * 7919) %% 400000 + 5000, (t.id * 104729) %% 90000 + 1000, t.id %% 7, 12.5, 80,
            ROUND(((t.id * 7919) %% 400000 + 5000) * 0.000003 + ((t.id * 104729) %% 90000 + 1000) * 0.000015, 8),
            60000, 10, 10, 10, 5, 3, 1, 1, 0
        FROM tenants_tenant t CROSS JOIN {days} CROSS JOIN ({models}) AS m
        WHERE t.slug LIKE 'op-%%'
    """  # noqa: S608


def _generate(count: int) -> dict:
    import datetime as dt
    from decimal import Decimal

    from django.db import connection, transaction
    from django.utils import timezone

    from billing.accounting import month_start
    from billing.models import TenantBudget
    from tenants.context import all_tenants, tenant_context
    from tenants.models import Membership, Tenant, Tier, User
    from tenants.roles import Role

    vendor = connection.vendor
    started = time.monotonic()
    tiers = [
        Tier.objects.create(
            slug=slug,
            name=slug.title(),
            monthly_price=Decimal(price),
            included_tokens=included,
            overage_price_per_1k_tokens=Decimal(overage),
            celery_queue=f"tier-{slug}",
        )
        for slug, price, included, overage in (
            ("basic", "49", 1_000_000, "0.004"),
            ("standard", "499", 20_000_000, "0.003"),
            ("premium", "4900", 250_000_000, "0.002"),
        )
    ]
    bench = Tenant.objects.create(slug="bench", name="Bench Corp", tier=tiers[2])
    owner = User.objects.create_user(email="owner@bench.example", password="bench-pass-0")
    people = User.objects.bulk_create([User(email=f"person{i:02d}@bench.example") for i in range(PEOPLE)])
    first_user = min(p.pk for p in people)
    with tenant_context(bench):
        Membership.objects.create(user=owner, role=Role.OWNER)
        Membership.objects.bulk_create([Membership(tenant=bench, user=p, role=Role.MEMBER) for p in people])
        TenantBudget.objects.create(monthly_budget=Decimal("150000"), soft_alert_percent=80)
    Tenant.objects.bulk_create(
        [Tenant(slug=f"op-{i:04d}", name=f"Operator Tenant {i:04d}", tier=tiers[i % 3]) for i in range(OTHER_TENANTS)]
    )
    now = timezone.now()
    start = int((now - dt.timedelta(days=DAYS)).timestamp())
    step = DAYS * 86400 / count
    params = {"tenant": bench.pk, "first_user": first_user, "count": count, "start": start, "step": step}
    with tenant_context(bench), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_events_sql(vendor), params)
    events_seconds = time.monotonic() - started
    log(f"{vendor}: {count:,} usage events in {events_seconds:.0f} s")
    with tenant_context(bench), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_rollup_sql(vendor), {"tenant": bench.pk})
    today = now.astimezone(dt.UTC).date()
    with all_tenants("bench: generating other tenants"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _other_tenants_sql(vendor), {"month": month_start(today).isoformat(), "today": today.isoformat()}
        )
        ids = list(Tenant.objects.filter(slug__startswith="op-").values_list("pk", flat=True))
        TenantBudget.unscoped.bulk_create(
            [
                TenantBudget(tenant_id=pk, monthly_budget=Decimal(50 + pk % 400), soft_alert_percent=80)
                for pk in ids[::3]
            ]
        )
    _settle(connection)
    from billing.models import UsageDaily

    with tenant_context(bench):
        rollup_rows = UsageDaily.objects.count()
    log(f"{vendor}: roll-ups and {OTHER_TENANTS} other tenants ready ({time.monotonic() - started:.0f} s in all)")
    return {
        "events": count,
        "rollup_rows_of_bench_tenant": rollup_rows,
        "tenants": OTHER_TENANTS + 1,
        "generate_seconds": round(time.monotonic() - started, 1),
        "events_seconds": round(events_seconds, 1),
    }


def _settle(connection) -> None:
    """Leave the database as a long-running one would be: statistics fresh and, on PostgreSQL,
    the new rows vacuumed (hint bits and visibility map set; otherwise autovacuum would be
    working through ten million rows during the measurement). VACUUM needs the tables' owner."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        return
    from portal.db.owner import as_owner

    started = time.monotonic()
    with as_owner(), connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) billing_usageevent")
        cursor.execute("VACUUM (ANALYZE) billing_usagedaily")
        cursor.execute("ANALYZE")
    log(f"postgresql: vacuumed and analysed in {time.monotonic() - started:.0f} s")


def _time(fn, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def measure(count: int, repeat: int) -> dict:
    from django.http import QueryDict
    from django.test import Client

    from billing import dashboards as d
    from billing.accounting import month_start
    from tenants.context import all_tenants, tenant_context
    from tenants.models import Tenant, User

    data = _generate(count)
    bench = Tenant.objects.select_related("tier").get(slug="bench")
    window = d.parse_window(QueryDict())

    def dashboard():
        with tenant_context(bench):
            return d.tenant_dashboard(bench, window)

    def operator_table():
        with all_tenants("bench: operator table"):
            rows = d.operator_rows(month_start(), sort="margin")
            return d.operator_totals(rows)

    board = dashboard()
    assert board.totals.turns > 0, "the dashboard saw no usage"
    totals = operator_table()
    assert totals.tenants == OTHER_TENANTS + 1, totals

    client = Client()
    client.force_login(User.objects.get(email="owner@bench.example"))
    operator = User.objects.create_user(email="operator@bench.example", password="x", is_staff=True)
    staff = Client()
    staff.force_login(operator)

    def dashboard_view():
        response = client.get("/t/bench/billing/")
        assert response.status_code == 200, response.status_code

    def operator_view():
        response = staff.get("/operator/billing/?sort=margin")
        assert response.status_code == 200, response.status_code

    return {
        **data,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "python_speed_ms": python_speed_ms(),
        "window_days": window.days,
        "dashboard": summary_ms(_time(dashboard, repeat)),
        "dashboard_view": summary_ms(_time(dashboard_view, max(5, repeat // 2))),
        "operator_table": summary_ms(_time(operator_table, repeat)),
        "operator_view": summary_ms(_time(operator_view, max(5, repeat // 2))),
    }


def child(args) -> int:
    from tests.bench.common import migrate, setup_django

    setup_django()
    migrate()
    result = measure(args.events, args.repeat)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


# --- the orchestrator ----------------------------------------------------------------------------


def run_one(db: str, events: int, repeat: int, timeout: float) -> dict:
    var_dir = VAR_BENCH / f"billing_{db}"
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    database = f"portal_bench_billing_{os.getpid()}" if db == "postgres" else None
    if database:
        log(f"{db}: creating PostgreSQL database {database}")
        create_database(database)
    out = var_dir / "result.json"
    env = django_env(database, redis=False, var_dir=var_dir)
    argv = [sys.executable, "-m", "tests.bench.billing", "--child", "--out", str(out)]
    argv += ["--events", str(events), "--repeat", str(repeat)]
    process = subprocess.Popen(argv, env=env)  # noqa: S603 (fixed argv)
    try:
        code = process.wait(timeout=timeout)
        if code != 0:
            raise RuntimeError(f"the {db} measurement exited with {code}")
        return json.loads(out.read_text())
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the {db} measurement overran its {timeout:.0f} s budget") from None
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if database:
            drop_database(database)
            log(f"{db}: dropped database {database}")
        if db == "sqlite":
            shutil.rmtree(var_dir / "celery", ignore_errors=True)
            for leftover in var_dir.glob("portal.sqlite3*"):
                leftover.unlink()  # gigabytes of generated events; the result stays


def merge(new: dict) -> dict:
    """Merge our keys into var/bench/billing.json, keeping keys other benchmarks wrote."""
    VAR_BENCH.mkdir(parents=True, exist_ok=True)
    current = {}
    if RESULT.exists():
        try:
            current = json.loads(RESULT.read_text())
        except json.JSONDecodeError:
            current = {}
    current.update(new)
    RESULT.write_text(json.dumps(current, indent=2, default=str))
    return current


def table(details: dict) -> str:
    lines = [
        "",
        f"  {'measure':<26} {'database':<10} {'p50 ms':>9} {'p90 ms':>9} {'goal':>8}  verdict",
        f"  {'-' * 26} {'-' * 10} {'-' * 9} {'-' * 9} {'-' * 8}  -------",
    ]
    for db, result in details.items():
        if "error" in result or "skipped" in result:
            lines.append(f"  {'(all)':<26} {db:<10} {result.get('error') or result.get('skipped')}")
            continue
        for key, goal_key in (
            ("dashboard", "dashboard_ms_p50"),
            ("dashboard_view", None),
            ("operator_table", "operator_table_ms_p50"),
            ("operator_view", None),
        ):
            stats = result[key]
            goal = GOALS.get(goal_key) if goal_key else None
            verdict = "" if goal is None else ("ok" if stats["p50"] <= goal else "OVER")
            goal_text = f"{goal:.0f}" if goal else "—"
            lines.append(f"  {key:<26} {db:<10} {stats['p50']:>9.1f} {stats['p90']:>9.1f} {goal_text:>8}  {verdict}")
        lines.append(
            f"  {'':<26} {db:<10} {result['events']:,} events, {result['rollup_rows_of_bench_tenant']:,} roll-up rows,"
            f" {result['tenants']:,} tenants, generated in {result['generate_seconds']:.0f} s;"
            f" load average {result.get('load_average_before')}; python_speed_ms {result.get('python_speed_ms')}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 events instead of 10 million")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # `make bench` passes BENCH_ARGS meant for every benchmark
    args.events = args.events or (200_000 if args.quick else 10_000_000)
    args.repeat = args.repeat or (15 if args.quick else 40)
    if args.child:
        return child(args)

    print(f"Tenant Portal billing dashboards benchmark ({args.events:,} events for one tenant)", flush=True)
    # Generous but bounded: generating 10M rows takes minutes on a small machine.
    timeout = 600 if args.quick else 3000
    details: dict = {}
    for db in args.databases.split(","):
        if db == "postgres":
            reason = postgres_unreachable()
            if reason:
                details[db] = {"skipped": reason}
                log(f"postgres: skipped — {reason}")
                continue
        started = time.monotonic()
        try:
            details[db] = run_one(db, args.events, args.repeat, timeout)
        except Exception as exc:
            details[db] = {"error": f"{exc.__class__.__name__}: {exc}"}
            log(f"{db}: FAILED — {exc}")
        details[db]["seconds"] = round(time.monotonic() - started, 1)

    def p50(db: str, key: str):
        return details.get(db, {}).get(key, {}).get("p50") if isinstance(details.get(db, {}).get(key), dict) else None

    new = {
        "dashboard_ms_p50": {db: p50(db, "dashboard") for db in details},
        "operator_table_ms_p50": {db: p50(db, "operator_table") for db in details},
        "dashboard_view_ms_p50": {db: p50(db, "dashboard_view") for db in details},
        "operator_view_ms_p50": {db: p50(db, "operator_view") for db in details},
        "billing_bench": {
            "events": args.events,
            "quick": bool(args.quick),
            "goals_ms": GOALS,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "details": details,
        },
    }
    merge(new)
    print(table(details), flush=True)
    print(f"\n  merged into {RESULT}", flush=True)
    failed = [db for db, r in details.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
