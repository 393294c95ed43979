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
4. the tenant's tokens-per-minute bucket, charged with the estimate at admission,
   settled with the real tokens (billing.limits.settle_tokens_per_minute) by the one
   call that wrote the event and closed the reservation;
5. the budget soft alert, once a month, when the month's bill (plan fee + token
   overage, billing.spend) crosses the threshold.

Every invocation gets exactly one `agent_turn` event, whatever its outcome:
turns blocked by the input guardrails (never queued) and turns cancelled while
still queued are recorded with zero tokens by `record_unrun_turn()`, so
`turns` in the roll-ups counts every turn a person asked for.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from billing import accounting
from billing.models import (
    LATENCY_BUCKET_FIELDS,
    MonthlyUsage,
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


_UPSERT_SQL_CACHE: dict[tuple, tuple[str, list]] = {}


def _upsert_sql(model, key_names: tuple, increment_names: tuple, guard: str = "") -> tuple[str, list]:
    """The statement for upsert_add and the fields of its columns, built once per shape
    (building it from model metadata on every call cost more than running it)."""
    cached = _UPSERT_SQL_CACHE.get((model, key_names, increment_names, guard))
    if cached is not None:
        return cached
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    named = {*key_names, *increment_names}
    fields = [model._meta.get_field(name) for name in (*key_names, *increment_names)]
    for field in model._meta.concrete_fields:
        # Model defaults are not database defaults: an inserted row needs every column.
        if field.primary_key or field.name in named or field.attname in named:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False) or field.has_default():
            fields.append(field)
    conflict = ", ".join(quote(model._meta.get_field(name).column) for name in key_names)
    updates = ", ".join(
        f"{quote(col)} = {table}.{quote(col)} + EXCLUDED.{quote(col)}"
        for col in (model._meta.get_field(name).column for name in increment_names)
    )
    # Identifiers come from model metadata (quoted); every value is a parameter.
    column_list = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    if guard and connection.vendor == "postgresql":
        # In INSERT … SELECT the target columns do not type the parameters (a prepared
        # statement would take them all as text): say each one's type.
        placeholders = ", ".join(f"CAST(%s AS {field.db_type(connection)})" for field in fields)
    rows = f"SELECT {placeholders} WHERE {guard}" if guard else f"VALUES ({placeholders})"
    sql = f"INSERT INTO {table} ({column_list}) {rows} ON CONFLICT ({conflict}) DO UPDATE SET {updates}"  # noqa: S608
    _UPSERT_SQL_CACHE[(model, key_names, increment_names, guard)] = (sql, fields)
    return sql, fields


def upsert_statement(model, keys: dict, increments: dict, guard: tuple[str, list] | None = None):
    """upsert_add() as (sql, params), for a caller that sends it with other statements.
    `guard`: an SQL condition (and its parameters) the row is written under."""
    sql, fields = _upsert_sql(model, tuple(keys), tuple(increments), guard[0] if guard else "")
    values = []
    now = None
    for field in fields:
        if field.name in keys or field.attname in keys:
            value = keys.get(field.name, keys.get(field.attname))
        elif field.name in increments:
            value = increments[field.name]
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now = now or timezone.now()
        else:
            value = field.get_default()
        values.append(field.get_db_prep_save(value, connection))
    return sql, values + (list(guard[1]) if guard else [])


def upsert_add(model, keys: dict, increments: dict) -> None:
    """INSERT the row, or add `increments` to the existing one — one statement.

    `keys` must be the columns of a unique constraint of `model`. Both
    PostgreSQL and SQLite (≥ 3.24) take ON CONFLICT … DO UPDATE; concurrent
    callers serialise on the row, so no increment is ever lost or doubled.
    The caller is in the tenant's context (RLS checks tenant_id on PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(*upsert_statement(model, keys, increments))


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


# The event is the turn's idempotency key: unique per (invocation, kind), so a
# redelivered or replayed task inserts nothing and RETURNING gives no row.
_EVENT_COLUMNS = (
    "tenant_id, invocation_id, kind, user_id, agent_slug, model_key, outcome, input_tokens, output_tokens, "
    "tool_calls, runtime_seconds, guardrail_checks, latency_ms, cost, price_book_version, estimated, created_at"
)
_EVENT_CONFLICT = "ON CONFLICT (invocation_id, kind) DO NOTHING RETURNING id"
_EVENT_SQL = (
    f"INSERT INTO billing_usageevent ({_EVENT_COLUMNS}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join(['%s'] * len(_EVENT_COLUMNS.split(',')))}) {_EVENT_CONFLICT}"
)


# "This transaction wrote the invocation's event": the event row with this exact
# created_at. Statements sent in the same batch as the event's INSERT … ON CONFLICT DO
# NOTHING cannot ask Python whether it inserted; they ask the table.
_OURS = (
    "EXISTS (SELECT 1 FROM billing_usageevent WHERE tenant_id = %s AND invocation_id = %s "
    "AND kind = %s AND created_at = %s)"
)
_SETTLE_SQL = f"""
UPDATE billing_reservation SET status = %s, closed_at = %s
WHERE tenant_id = %s AND invocation_id = %s AND status = %s AND {_OURS}
RETURNING month, user_key, tokens, cost, tokens_per_minute
"""  # noqa: S608 (constant fragments)
_BUDGET_SQL = (
    "SELECT monthly_budget, soft_alert_percent, alerted_month FROM billing_tenantbudget "
    "WHERE tenant_id = %s AND monthly_budget IS NOT NULL"
)

# PostgreSQL: the settlement and the month counters in one statement, so that a turn's
# whole finish is one query string (one round trip, one implicit transaction, with the
# hot month rows locked only while it runs; see agents.turns._finish). The same changes
# as _month_statements(): the tenant's and the person's rows of this month get the real
# usage, and the rows of the reservation's month give back what it held; a row touched
# by both gets one update (GROUP BY), the rows locked in (month, user_key) order.
_OURS_NAMED = (
    "EXISTS (SELECT 1 FROM billing_usageevent WHERE tenant_id = %(tenant)s AND invocation_id = %(invocation)s "
    "AND kind = %(kind)s AND created_at = %(now)s)"
)
_SETTLE_AND_COUNT_POSTGRES = f"""
WITH settled AS (
    UPDATE billing_reservation SET status = %(settled)s, closed_at = %(now)s
    WHERE tenant_id = %(tenant)s AND invocation_id = %(invocation)s AND status = %(held)s AND {_OURS_NAMED}
    RETURNING month, user_key, tokens, cost, tokens_per_minute
), changes AS (
    SELECT CAST(%(month)s AS date) AS month, keys.user_key, CAST(%(tokens)s AS bigint) AS tokens_used,
        CAST(%(cost)s AS numeric) AS cost_used, CAST(0 AS bigint) AS tokens_reserved,
        CAST(0 AS numeric) AS cost_reserved
    FROM (SELECT DISTINCT unnest(ARRAY[0, CAST(%(user_key)s AS bigint)]) AS user_key) keys
    WHERE {_OURS_NAMED}
    UNION ALL
    SELECT s.month, keys.user_key, 0, 0, -s.tokens, -s.cost
    FROM settled s CROSS JOIN LATERAL (SELECT DISTINCT unnest(ARRAY[0, s.user_key]) AS user_key) keys
), written AS (
    INSERT INTO billing_monthlyusage
        (tenant_id, month, user_key, tokens_used, tokens_reserved, cost_used, cost_reserved, updated_at)
    SELECT %(tenant)s, month, user_key, SUM(tokens_used), SUM(tokens_reserved), SUM(cost_used),
        SUM(cost_reserved), %(now)s
    FROM changes GROUP BY month, user_key ORDER BY month, user_key
    ON CONFLICT (tenant_id, month, user_key) DO UPDATE SET
        tokens_used = billing_monthlyusage.tokens_used + EXCLUDED.tokens_used,
        tokens_reserved = billing_monthlyusage.tokens_reserved + EXCLUDED.tokens_reserved,
        cost_used = billing_monthlyusage.cost_used + EXCLUDED.cost_used,
        cost_reserved = billing_monthlyusage.cost_reserved + EXCLUDED.cost_reserved
    RETURNING month, user_key, tokens_used
)
SELECT tokens_used, (SELECT tokens FROM settled), (SELECT tokens_per_minute FROM settled)
FROM written WHERE month = %(month)s AND user_key = 0
"""  # noqa: S608 (constant fragments)


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
    now=None,
    prices: accounting.Prices | None = None,
    together_with: list | tuple = (),
    only_if: tuple[str, list] | None = None,
) -> UsageEvent | None:
    """Write the invocation's usage event, roll-up and settlement; None if it was
    already recorded (a redelivery or replay: nothing else changes then), or if
    `only_if` (an SQL condition and its parameters) did not hold.

    Runs in the transaction that writes the final status: the caller's, or, on
    PostgreSQL outside one, the implicit transaction of the one query string that
    carries the caller's `together_with` statements first (see agents.turns._finish).
    `now` and `prices` (the book in force at `now`) may come from the caller.

    PostgreSQL: one round trip. The event goes first; everything after it (roll-up,
    settlement, month counters) is guarded by "the event this call wrote exists", so a
    replay changes nothing. SQLite: the same, with the month counters a second step."""
    from portal.db import sql

    now = now or timezone.now()
    prices = prices or accounting.prices_for(invocation.model_key, offering, now)
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
    invocation_key = sql.uuid(event.invocation_id)
    ours = [event.tenant_id, invocation_key, event.kind, sql.dt(now)]
    event_statement = (
        _event_sql(only_if[0] if only_if else ""),
        [*_event_values(event, invocation_key), *(only_if[1] if only_if else ())],
    )
    daily_statement = upsert_statement(
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
        guard=(_OURS, ours),
    )
    month = accounting.month_start(now)
    if sql.connection.vendor == "postgresql":
        settle_and_count = (
            _SETTLE_AND_COUNT_POSTGRES,
            {
                "settled": ReservationStatus.SETTLED,
                "held": ReservationStatus.HELD,
                "now": sql.dt(now),
                "tenant": event.tenant_id,
                "invocation": invocation_key,
                "kind": event.kind,
                "month": sql.date(month),
                "user_key": invocation.user_id or 0,
                "tokens": input_tokens + output_tokens,
                "cost": cost,
            },
        )
        results = sql.batch(
            [*together_with, event_statement, daily_statement, settle_and_count, (_BUDGET_SQL, [event.tenant_id])]
        )
        inserted, _, tenant_month, budget = results[len(together_with) :]
        if inserted is None:
            log.info("turn %s: usage already recorded", invocation.pk)
            return None
        _recorded(event, inserted[0])
        if tenant_month[1] is not None:
            _settle_rate(
                invocation, estimated=tenant_month[1], used=input_tokens + output_tokens, charged_at=tenant_month[2]
            )
        if budget is not None:
            _maybe_soft_alert(invocation.tenant_id, month, int(tenant_month[0]), budget)
        return event
    settle_statement = (
        _SETTLE_SQL,
        [ReservationStatus.SETTLED, sql.dt(now), event.tenant_id, invocation_key, ReservationStatus.HELD, *ours],
    )
    results = sql.batch(
        [
            *together_with,
            event_statement,
            daily_statement,
            settle_statement,
            (_BUDGET_SQL, [invocation.tenant_id]),
        ]
    )
    inserted, _, held, budget = results[len(together_with) :]
    if inserted is None:
        log.info("turn %s: usage already recorded", invocation.pk)
        return None
    _recorded(event, inserted[0])
    if held is not None:
        _settle_rate(invocation, estimated=held[2], used=input_tokens + output_tokens, charged_at=held[4])
    statements = _month_statements(invocation, month, tokens=input_tokens + output_tokens, cost=cost, held=_held(held))
    tenant_tokens_used = int(sql.batch(statements)[0][0])
    if budget is not None:
        _maybe_soft_alert(invocation.tenant_id, month, tenant_tokens_used, budget)
    return event


def _settle_rate(invocation, *, estimated: int, used: int, charged_at: int | None) -> None:
    """The TPM bucket charged with the estimate at admission gets the real usage. Called
    only by the record_turn call that wrote the event and closed the held reservation:
    that pair is the turn's exactly-once, so a replayed finish settles nothing again."""
    from billing.limits import settle_tokens_per_minute
    from tenants.context import current_tenant

    tenant = current_tenant()
    if tenant is None or tenant.pk != invocation.tenant_id:
        tenant = invocation.tenant
    settle_tokens_per_minute(tenant, estimated=int(estimated), used=int(used), charged_at=charged_at)


def _recorded(event: UsageEvent, pk: int) -> None:
    event.pk = pk
    event._state.adding = False


_EVENT_SQL_GUARDED: dict[str, str] = {}


def _event_values(event: UsageEvent, invocation_key) -> list:
    """`event`'s values in _EVENT_COLUMNS' order (its invocation id as sql.uuid gives it)."""
    from portal.db import sql

    return [
        event.tenant_id,
        invocation_key,
        event.kind,
        event.user_id,
        event.agent_slug,
        event.model_key,
        event.outcome,
        event.input_tokens,
        event.output_tokens,
        event.tool_calls,
        event.runtime_seconds,
        event.guardrail_checks,
        event.latency_ms,
        event.cost,
        event.price_book_version,
        event.estimated,
        sql.dt(event.created_at),
    ]


def _event_sql(guard: str) -> str:
    """_EVENT_SQL, or with `guard` its row is inserted only under that condition
    (INSERT … SELECT, each value cast to its column's type for the prepared statement)."""
    if not guard:
        return _EVENT_SQL
    text = _EVENT_SQL_GUARDED.get(guard)
    if text is None:
        fields = {field.column: field for field in UsageEvent._meta.concrete_fields}
        values = ", ".join(
            f"CAST(%s AS {fields[name.strip()].db_type(connection)})" for name in _EVENT_COLUMNS.split(",")
        )
        text = _EVENT_SQL_GUARDED[guard] = (
            f"INSERT INTO billing_usageevent ({_EVENT_COLUMNS}) SELECT {values} WHERE {guard} {_EVENT_CONFLICT}"  # noqa: S608
        )
    return text


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


# --- embeddings: the knowledge bases' embedding service ----------------------------------------

# The namespace of embedding events' keys (uuid5): the same ingestion or the same turn's
# query gives the same key, so the unique (invocation_id, kind) bills it once.
EMBEDDING_KEYS = uuid.UUID("5f0c3c1e-8a5d-4d0e-9b7a-2f6c1d7e4a90")


def document_embedding_key(tenant_id: int, document_id: int, version: int) -> uuid.UUID:
    """One key per ingested version of a document: the ingestion task run again for the
    same version (a redelivery) bills nothing more."""
    return uuid.uuid5(EMBEDDING_KEYS, f"document:{tenant_id}:{document_id}:{version}")


def turn_embedding_key(invocation_id, query: str) -> uuid.UUID:
    """One key per query a turn embeds: a turn run again (the same invocation) bills its
    query once, and a runtime that searches twice in a turn with different queries pays
    for each."""
    return uuid.uuid5(EMBEDDING_KEYS, f"turn:{invocation_id}:{query}")


def record_embedding(
    tenant_id: int,
    *,
    key: uuid.UUID,
    model_key: str,
    tokens: int,
    estimated: bool,
    user_id: int | None = None,
    agent_slug: str = "",
    now=None,
) -> UsageEvent | None:
    """Write an embedding event and add it to the day's roll-up; None if `key` was
    recorded already (nothing else changes then).

    What the embedding service was paid for is the provider's cost, attributed to the
    tenant: priced from the book in force (per 1k input tokens of `model_key`) into
    `cost`, which the operator's cost and margin read. The tokens are not the plan's
    tokens: they go to the roll-up's `embedding_tokens`, never to input/output tokens, and
    not to the month's counters (billing.models.MonthlyUsage), so they neither use up the
    tier's token quota nor bill overage, and no turn admission reserved them. A model the
    book does not list costs 0 (logged), as an unpriced chat model without a catalogue
    price does; nothing fails for want of a price."""
    from portal.db import sql

    now = now or timezone.now()
    row = sql.one(*accounting.prices_statement(model_key, now))
    if row is None or row[3] is None:
        log.warning("embedding model %r has no price in the book in force: recorded at cost 0", model_key)
    prices = accounting.prices_from_row(row)
    cost = prices.cost(tokens, 0)
    event = UsageEvent(
        tenant_id=tenant_id,
        invocation_id=key,
        kind=UsageKind.EMBEDDING,
        user_id=user_id,
        agent_slug=agent_slug,
        model_key=model_key,
        input_tokens=tokens,
        cost=cost,
        price_book_version=prices.version,
        estimated=estimated,
        created_at=now,
    )
    invocation_key = sql.uuid(key)
    event_statement = (
        _EVENT_SQL,
        _event_values(event, invocation_key),
    )
    daily_statement = upsert_statement(
        UsageDaily,
        {
            "tenant": tenant_id,
            "day": accounting.utc_day(now),
            "model_key": model_key,
            "agent_slug": agent_slug,
            "user_key": user_id or 0,
        },
        {"embedding_tokens": tokens, "cost": cost},
        guard=(_OURS, [tenant_id, invocation_key, event.kind, sql.dt(now)]),
    )
    # One transaction on both databases: the event and its roll-up commit together.
    with transaction.atomic():
        inserted, _ = sql.batch([event_statement, daily_statement])
    if inserted is None:
        log.info("embedding %s: usage already recorded", key)
        return None
    _recorded(event, inserted[0])
    return event


def _agent_slug(invocation) -> str:
    agent = getattr(invocation, "agent", None)
    if agent is not None:
        return agent.slug
    return ""


# Add to a month row (creating it): real usage and/or a change of what is reserved.
_MONTH_ADD_SQL = """
INSERT INTO billing_monthlyusage
    (tenant_id, month, user_key, tokens_used, tokens_reserved, cost_used, cost_reserved, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, month, user_key) DO UPDATE SET
    tokens_used = billing_monthlyusage.tokens_used + EXCLUDED.tokens_used,
    tokens_reserved = billing_monthlyusage.tokens_reserved + EXCLUDED.tokens_reserved,
    cost_used = billing_monthlyusage.cost_used + EXCLUDED.cost_used,
    cost_reserved = billing_monthlyusage.cost_reserved + EXCLUDED.cost_reserved
RETURNING tokens_used
"""


def _held(row):
    """A closed reservation's row: (month, user_key, tokens, cost), or None."""
    from portal.db import sql

    if row is None:
        return None
    month, user_key, tokens, cost = row[:4]
    return sql.date_from_db(month), user_key, tokens, sql.decimal_from_db(cost, 8)


def _month_statement(
    tenant_id, month, user_key, *, tokens_used=0, tokens_reserved=0, cost_used=None, cost_reserved=None
):
    """Add to the (tenant, month, user_key) row (RETURNING its tokens_used afterwards)."""
    from portal.db import sql

    zero = Decimal("0")
    return _MONTH_ADD_SQL, [
        tenant_id,
        sql.date(month),
        user_key,
        tokens_used,
        tokens_reserved,
        cost_used if cost_used is not None else zero,
        cost_reserved if cost_reserved is not None else zero,
        sql.dt(timezone.now()),
    ]


def _month_statements(invocation, month, *, tokens: int, cost: Decimal, held) -> list:
    """The month counters' changes for a turn's real usage and its settled reservation
    (`held`, or None): the tenant row's statement first. When the reservation was taken
    in the same month, each row takes one statement for both."""
    statements = []
    user_key = invocation.user_id or 0
    for key in sorted({0, user_key}):
        release_here = held is not None and held[0] == month and key in (0, held[1])
        statements.append(
            _month_statement(
                invocation.tenant_id,
                month,
                key,
                tokens_used=tokens,
                cost_used=cost,
                tokens_reserved=-held[2] if release_here else 0,
                cost_reserved=-held[3] if release_here else None,
            )
        )
    if held is not None:
        reserved_month, reserved_user, reserved_tokens, reserved_cost = held
        for key in sorted({0, reserved_user}):
            if reserved_month == month and key in (0, user_key):
                continue  # given back above, with the real usage
            statements.append(
                _month_statement(
                    invocation.tenant_id,
                    reserved_month,
                    key,
                    tokens_reserved=-reserved_tokens,
                    cost_reserved=-reserved_cost,
                )
            )
    return statements


def _maybe_soft_alert(tenant_id: int, month, tokens_used: int | None = None, budget_row=None) -> None:
    """Alert the tenant's admins once a month when the month's bill (plan fee + token
    overage on the tokens used so far, billing.spend) crosses the soft-alert threshold
    (the fee plus the alert share of what the budget leaves above it, spend.alert_due).
    The bill, not the price book's cost: the budget caps what the tenant pays.

    The flag flips with a conditional UPDATE, so parallel turns crossing the line
    together write one alert (an AuditLog entry the admins see)."""
    from portal.db import sql

    row = budget_row or sql.one(_BUDGET_SQL, [tenant_id])
    if row is None or row[0] is None or sql.date_from_db(row[2]) == month:
        return
    from billing import spend
    from tenants.models import Tenant

    # Past the cheap checks: the tenant's plan prices the tokens.
    tenant = Tenant.objects.select_related("tier").get(pk=tenant_id)
    if tokens_used is None:
        tokens_used = MonthlyUsage.objects.filter(month=month, user_key=0).values_list("tokens_used", flat=True).first()
    monthly_budget, alert_percent = sql.decimal_from_db(row[0], 2), int(row[1])
    so_far = spend.bill(spend.month_plan(tenant, month), tokens_used or 0)
    if not spend.alert_due(so_far, monthly_budget, alert_percent):
        return
    from django.db.models import Q

    flipped = (
        TenantBudget.objects.filter(tenant_id=tenant_id)
        .filter(Q(alerted_month__isnull=True) | ~Q(alerted_month=month))
        .update(alerted_month=month)
    )
    if flipped:
        from tenants import audit

        budget = TenantBudget.objects.get(tenant_id=tenant_id)

        audit.record(
            "billing.budget_soft_alert",
            tenant=tenant,
            target=budget,
            target_repr=f"Budget {budget.monthly_budget}",
            after={
                "month": month.isoformat(),
                "bill_so_far": str(so_far.total),
                "plan_fee": str(so_far.fee),
                "token_overage": str(so_far.overage),
                "tokens_used": so_far.tokens,
                "threshold_percent": budget.soft_alert_percent,
                "monthly_budget": str(budget.monthly_budget),
            },
        )
