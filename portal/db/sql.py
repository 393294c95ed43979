"""Hand-written SQL for the chat turn's hot path: a few small helpers.

Why not the ORM there: building a query costs the ORM 100–250 µs of Python per
statement, and a turn used to run about fifty of them, while a statement's round
trip to PostgreSQL on this kind of machine is about 25 µs. The turn's statements
(agents.services.post_message, billing.limits.admit, agents.turns, billing.metering)
are therefore written out once, as SQL both SQLite and PostgreSQL accept, and run
through Django's cursor. That keeps everything the ORM's path has that matters for
isolation: on PostgreSQL the cursor goes through portal.db.postgresql, which sets
the tenant (row-level security) before the first statement of each transaction.
What the ORM's TenantManager adds on SQLite, the `tenant_id = %s` condition, every
statement here writes itself.

Values go in as parameters, never into the SQL text. Python values Django would
adapt per field (datetimes, UUIDs) go through `dt()` and `uuid()`; Decimals and
bools are adapted by the drivers.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import re
import threading
import uuid as uuid_module
import weakref
from typing import NamedTuple

from django.db import DEFAULT_DB_ALIAS, connection, connections


def _db():
    """The default connection's wrapper itself. `django.db.connection` is a proxy that
    looks the wrapper up (an asgiref Local) on every attribute read: a few µs each, and
    a turn reads about 150 of them here."""
    return connections[DEFAULT_DB_ALIAS]


_CONTEXT = decimal.Context(prec=15)


def dt(value: datetime.datetime | None):
    """A datetime as the backend stores it (naive UTC text on SQLite, as it is on PostgreSQL)."""
    return _db().ops.adapt_datetimefield_value(value)


def date(value: datetime.date | None):
    return _db().ops.adapt_datefield_value(value)


def uuid(value) -> object:
    """A UUID as the backend stores it (32 hex characters on SQLite, uuid on PostgreSQL)."""
    if not isinstance(value, uuid_module.UUID):
        value = uuid_module.UUID(str(value))
    return value if _db().vendor == "postgresql" else value.hex


def decimal_from_db(value, places: int | None = None) -> decimal.Decimal | None:
    """A DECIMAL column read back: SQLite hands back a float (or int), PostgreSQL a Decimal.
    Converted the way Django's SQLite backend converts it (15 significant digits)."""
    if value is None:
        return None
    value = _CONTEXT.create_decimal_from_float(value) if isinstance(value, float) else decimal.Decimal(value)
    if places is not None:
        value = value.quantize(decimal.Decimal(1).scaleb(-places), context=_CONTEXT)
    return value


def datetime_from_db(value) -> datetime.datetime | None:
    """A DATETIME column read back: text on SQLite (naive UTC), an aware datetime on PostgreSQL."""
    if value is None or isinstance(value, datetime.datetime):
        return value
    parsed = datetime.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def date_from_db(value) -> datetime.date | None:
    if value is None or isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(value)


def json_from_db(value):
    """A JSON column read back: text on SQLite, already decoded by psycopg on PostgreSQL."""
    import json

    return json.loads(value) if isinstance(value, str | bytes) else value


# --- prepared statements (PostgreSQL) -------------------------------------------------
#
# PostgreSQL plans each statement it is sent as text; for the turn's joins that costs
# more than running them (the claim: 1.5 ms of planning for 0.3 ms of work). Each
# statement run through this module is therefore PREPAREd once per connection and then
# EXECUTEd with its values: planned once, per connection. Prepared statements belong to
# the session, survive a rolled-back transaction, and are replanned by PostgreSQL itself
# when a table they use changes. Row-level security still applies at execution (the
# policies read the transaction's settings, which portal.db.postgresql sends with the
# EXECUTE). On SQLite, where planning is cheap and in-process, statements run as written.

_PREPARED: dict[str, tuple[str, str, list]] = {}  # text -> (name, $n text, parameter names)
_PREPARED_ON = weakref.WeakKeyDictionary()  # psycopg connection -> names prepared there
_PREPARED_LOCK = threading.Lock()


def _prepare_plan(statement: str, params) -> tuple[str, str, list]:
    plan = _PREPARED.get(statement)
    if plan is None:
        order: list = []  # positional index (int) or parameter name, per $n

        def number(match):
            if match.group(0) == "%%":
                return "%"
            key = match.group(1) if match.group(1) is not None else len([k for k in order if isinstance(k, int)])
            if key not in order or isinstance(key, int):
                order.append(key)
            return f"${order.index(key) + 1}"

        text = _PLACEHOLDER.sub(number, statement)
        name = "portal_" + hashlib.sha1(statement.encode()).hexdigest()[:20]  # noqa: S324 (a name, not security)
        plan = _PREPARED[statement] = (name, text, order)
    return plan


def _statement(statement: str, params) -> tuple[str, object]:
    """What to send for (statement, params): on PostgreSQL an EXECUTE of the statement
    prepared on this connection (preparing it first if need be)."""
    db = _db()
    if db.vendor != "postgresql" or params is None:
        return statement, params
    name, text, order = _prepare_plan(statement, params)
    raw = db.connection
    with _PREPARED_LOCK:
        prepared = _PREPARED_ON.setdefault(raw, set())
    if name not in prepared:
        with raw.cursor() as cursor:  # no tenant settings needed: PREPARE reads no rows
            cursor.execute(f"PREPARE {name} AS {text}")
        prepared.add(name)
    values = [params[key] for key in order]
    if not values:
        return f"EXECUTE {name}", []
    return f"EXECUTE {name}({', '.join(['%s'] * len(values))})", values


# --- SQLite: straight to sqlite3 ----------------------------------------------------
#
# On SQLite a statement costs about 2 µs in sqlite3 and 12 µs through Django's cursor
# (the wrappers, and a regex turning %s into ? every time). With no query logging asked
# for (DEBUG, or a test's CaptureQueriesContext, which then see every statement), the
# statements of this module go to the sqlite3 connection directly, their placeholders
# converted once per statement; errors are still Django's (wrap_database_errors), and a
# transaction Django opened (atomic: BEGIN IMMEDIATE) still holds them.

_SQLITE_TEXT: dict[str, str] = {}


def _sqlite_text(statement: str) -> str:
    text = _SQLITE_TEXT.get(statement)
    if text is None:

        def convert(match):
            if match.group(0) == "%%":
                return "%"
            return f":{match.group(1)}" if match.group(1) is not None else "?"

        text = _SQLITE_TEXT[statement] = _PLACEHOLDER.sub(convert, statement)
    return text


def _direct() -> bool:
    db = _db()
    return db.vendor == "sqlite" and not db.queries_logged


def _sqlite(statement: str, params, fetch: str):
    db = _db()
    db.ensure_connection()
    with db.wrap_database_errors:
        cursor = db.connection.execute(_sqlite_text(statement), params)
        try:
            if fetch == "one":
                return cursor.fetchone() if cursor.description else None
            if fetch == "all":
                return cursor.fetchall()
            return cursor.rowcount
        finally:
            cursor.close()


def _returns_rows(cursor) -> bool:
    """Whether the statement's result has columns (a SELECT or RETURNING, even of no row).
    psycopg builds a Column object for every column on each read of `description` (85 for
    the claim: about 0.4 ms); the result's field count answers the same for nothing."""
    result = getattr(cursor.cursor, "pgresult", None)
    if result is not None:
        return result.nfields > 0
    return cursor.description is not None


def one(sql: str, params=()) -> tuple | None:
    """The first row (None: no row, or a statement that returns none)."""
    if _direct():
        return _sqlite(sql, params, "one")
    with connection.cursor() as cursor:
        cursor.execute(*_statement(sql, params))
        return cursor.fetchone() if _returns_rows(cursor) else None


def all_rows(sql: str, params=()) -> list[tuple]:
    if _direct():
        return _sqlite(sql, params, "all")
    with connection.cursor() as cursor:
        cursor.execute(*_statement(sql, params))
        return cursor.fetchall()


# Commit without waiting for the WAL flush (about 0.4 ms per commit on this kind of
# machine). Only for a statement that is its own transaction and whose loss in a
# database crash is harmless (see callers): everything else commits durably.
_ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"


def one_not_durable(sql: str, params=()) -> tuple | None:
    """Like one(), for a statement that is a whole transaction by itself and may be lost
    if the database server crashes in the next moment (PostgreSQL: synchronous_commit
    off for it alone; it still commits atomically, is never partly applied and cannot
    corrupt anything). Inside a transaction, a plain one()."""
    if connection.vendor != "postgresql" or not connection.get_autocommit():
        return one(sql, params)
    statement, values = _statement(sql, params)
    with connection.cursor() as cursor:
        cursor.execute(f"{_ASYNC_COMMIT}; {statement}", values)
        cursor.cursor.nextset()
        return cursor.fetchone() if _returns_rows(cursor) else None


def run(sql: str, params=()) -> int:
    """Execute; the number of rows it changed."""
    if _direct():
        return _sqlite(sql, params, "rowcount")
    with connection.cursor() as cursor:
        cursor.execute(*_statement(sql, params))
        return cursor.rowcount


class _InsertPlan(NamedTuple):
    statement: str
    fields: list
    auto_pk: bool
    pass_through: list[bool]  # per field: its value goes to the driver as it is (_passes_through)
    tenant_owned: bool


# One entry per model, published whole in one assignment: threads that insert the same
# model for the first time at once (a web process's first requests) each see either no
# plan or all of it. (It was three dicts filled one after another, and a thread could
# find the statement before the rest: a KeyError under the concurrency proof.)
_INSERT_PLANS: dict[type, _InsertPlan] = {}


def _insert_plan(model) -> _InsertPlan:
    plan = _INSERT_PLANS.get(model)
    if plan is None:
        quote = connection.ops.quote_name
        pk = model._meta.pk
        auto_pk = pk.get_internal_type() in ("AutoField", "BigAutoField", "SmallAutoField")
        fields = [f for f in model._meta.concrete_fields if not (auto_pk and f.primary_key)]
        statement = "INSERT INTO {} ({}) VALUES ({}){}".format(  # noqa: S608 (identifiers from model metadata)
            quote(model._meta.db_table),
            ", ".join(quote(f.column) for f in fields),
            ", ".join(["%s"] * len(fields)),
            f" RETURNING {quote(pk.column)}" if auto_pk else "",
        )
        plan = _InsertPlan(
            statement=statement,
            fields=fields,
            auto_pk=auto_pk,
            pass_through=[_passes_through(f) for f in fields],
            tenant_owned=any(f.name == "tenant" for f in fields),
        )
        _INSERT_PLANS[model] = plan
    return plan


# Field types whose Python value the drivers take as it is: for these, Field.pre_save and
# get_db_prep_save only read the attribute (about 5 µs a field, 25 fields a row).
_PLAIN_TYPES = {
    "CharField",
    "TextField",
    "SlugField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "PositiveBigIntegerField",
    "BooleanField",
    "FloatField",
    "ForeignKey",
    "AutoField",
    "BigAutoField",
}


def _passes_through(field) -> bool:
    if field.get_internal_type() not in _PLAIN_TYPES:
        return False
    if field.get_internal_type() == "ForeignKey":  # its value is the target's key
        return field.target_field.get_internal_type() in _PLAIN_TYPES
    return True


def insert_fields(model) -> list:
    """The fields insert_values() gives values for, in order."""
    return _insert_plan(model).fields


def insert_values(instance) -> tuple[str, list]:
    """The INSERT statement of a new instance and its parameters (see insert())."""
    from tenants.scoping import assign_tenant

    model = type(instance)
    plan = _insert_plan(model)
    if plan.tenant_owned:
        assign_tenant(instance)
    values, db = instance.__dict__, _db()
    return plan.statement, [
        values[f.attname] if plain else f.get_db_prep_save(f.pre_save(instance, True), db)
        for f, plain in zip(plan.fields, plan.pass_through, strict=True)
    ]


def inserted(instance, pk=None) -> None:
    """Mark an instance written by insert_values()' statement as saved (with its new pk)."""
    if pk is not None:
        setattr(instance, type(instance)._meta.pk.attname, pk)
    instance._state.adding = False
    instance._state.db = DEFAULT_DB_ALIAS


def insert(instance) -> None:
    """INSERT a new model instance in one statement, with the statement built once per
    model (Model.save() builds it every time). Fills an auto primary key from RETURNING.

    Tenant-owned rows keep TenantOwnedModel.save()'s rule: the tenant comes from the
    context, and a row for another tenant is refused. No signals are sent: use it only
    for models nothing listens to (the turn's messages, invocations, reservations)."""
    statement, values = insert_values(instance)
    if _direct():
        row = _sqlite(statement, values, "one")
        inserted(instance, row[0] if _insert_plan(type(instance)).auto_pk else None)
        return
    with connection.cursor() as cursor:
        cursor.execute(*_statement(statement, values))
        inserted(instance, cursor.fetchone()[0] if _insert_plan(type(instance)).auto_pk else None)


class RowReader:
    """Reads rows of hand-written JOINs into model instances, the way the ORM would.

    `RowReader([(Invocation, "i"), (Agent, "a")])` gives `.columns` (every concrete
    column of each model, table-aliased, in field order) to put in a SELECT, and
    `.read(row)` turns one result row into one instance per model (None for a LEFT
    JOIN that found nothing), with Django's own converters for each field (SQLite's
    text datetimes and JSON, PostgreSQL's UUIDs)."""

    def __init__(self, models: list[tuple[type, str]]):
        quote = connection.ops.quote_name
        self.models = models
        self.columns = ", ".join(
            f"{alias}.{quote(field.column)}" for model, alias in models for field in model._meta.concrete_fields
        )
        self._plan = []
        for model, _ in models:
            fields = []
            for field in model._meta.concrete_fields:
                column = field.get_col(model._meta.db_table)
                converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                fields.append((column, converters))
            pk_index = next(i for i, f in enumerate(model._meta.concrete_fields) if f.primary_key)
            self._plan.append((model, fields, pk_index))

    def read(self, row) -> list:
        db = _db()
        instances, at = [], 0
        for model, fields, pk_index in self._plan:
            values = list(row[at : at + len(fields)])
            at += len(fields)
            if values[pk_index] is None:
                instances.append(None)
                continue
            for i, (column, converters) in enumerate(fields):
                for convert in converters:
                    values[i] = convert(values[i], column, db)
            instances.append(model.from_db(db.alias, None, values))
        return instances


_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def batch(statements: list[tuple[str, object]]) -> list[tuple | None]:
    """Run statements that do not depend on each other's results; the first row of each
    (None for a statement that returns no rows).

    On PostgreSQL they travel as one query string, so they cost one round trip (inside
    a transaction they are part of it; outside one they form one implicit transaction);
    on SQLite, where there is no round trip, they run one after another."""
    if connection.vendor != "postgresql":
        if _direct():
            return [_sqlite(statement, params, "one") for statement, params in statements]
        results = []
        for statement, params in statements:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                results.append(cursor.fetchone() if cursor.description else None)
        return results
    texts, values = [], []
    for statement, params in statements:
        text, statement_values = _statement(statement, params)
        texts.append(text)
        values.extend(statement_values)
    results = []
    with connection.cursor() as cursor:
        cursor.execute(";\n".join(texts), values)
        while True:
            results.append(cursor.fetchone() if _returns_rows(cursor) else None)
            if not cursor.cursor.nextset():
                break
    return results
