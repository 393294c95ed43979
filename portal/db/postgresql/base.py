"""PostgreSQL backend that carries the tenant context into every transaction.

Row-level security policies read `current_setting('app.tenant_id', true)`
(and `app.user_id`, `app.all_tenants`). We set them with
`set_config(..., is_local => true)`, the function form of SET LOCAL, so a
value can never outlive its transaction and leak into the next request that
reuses the connection.

* Inside a transaction (atomic block), the values are set before the first
  query and again whenever the context changes.
* In autocommit mode each statement is its own transaction, so a statement
  issued with a tenant (or all-tenants) scope is wrapped in a short transaction
  that sets the values first. With no scope the statement runs bare and RLS
  shows it no tenant rows.
"""

from __future__ import annotations

from django.db import transaction
from django.db.backends.postgresql import base

from tenants.context import rls_settings


def _cache_longer_queries() -> None:
    """Let psycopg keep its parse of queries with up to 256 parameters (it keeps 50).

    A client-side-bound query is scanned for its placeholders on every execute unless
    psycopg has it cached, and it caches only queries of at most 50 parameters. The chat
    turn's batches (portal.db.sql.batch: the same text every time) carry 60 to 90, and
    their scan was about 9 % of the worker's CPU per turn and 3 % of the web's. The
    cache is keyed by the query text, so only the limit changes; a psycopg without the
    constant is left as it is."""
    from psycopg import _queries

    if getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", 256) < 256:
        _queries.MAX_CACHED_STATEMENT_PARAMS = 256


_cache_longer_queries()

_NO_SCOPE = ("", "", "")
_SET_SQL = (
    "SELECT set_config('app.tenant_id', %s, true), "
    "set_config('app.user_id', %s, true), "
    "set_config('app.all_tenants', %s, true)"
)


def _can_go_in_front(sql, params, many, context) -> bool:
    """Whether the tenant settings can travel in the statement's own query string: a
    single execute with parameters (so its literal % signs are escaped) on a
    client-side-binding cursor (which sends one simple-protocol query string; a
    server-side cursor wraps the text in DECLARE)."""
    import psycopg

    return (
        not many
        and params is not None
        and isinstance(context["cursor"].cursor, psycopg.ClientCursor)
        and not isinstance(context["cursor"].cursor, psycopg.ServerCursor)
    )


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What this connection's current transaction has been told; None = unknown.
        self._rls_applied: tuple[str, str, str] | None = None
        # True while Django issues SAVEPOINT / RELEASE / ROLLBACK TO: those must
        # run bare (a set_config in an aborted transaction would fail).
        self._transaction_control = False
        # First in the list = outermost wrapper, so it runs before anything a
        # test or tool adds with connection.execute_wrapper().
        self.execute_wrappers.insert(0, self._apply_tenant_scope)

    # Any transaction boundary forgets what was set.
    def _set_autocommit(self, autocommit):
        self._rls_applied = None
        return super()._set_autocommit(autocommit)

    def _commit(self):
        self._rls_applied = None
        return super()._commit()

    def _rollback(self):
        self._rls_applied = None
        return super()._rollback()

    def _savepoint(self, sid):
        self._transaction_control = True
        try:
            return super()._savepoint(sid)
        finally:
            self._transaction_control = False

    def _savepoint_commit(self, sid):
        self._transaction_control = True
        try:
            return super()._savepoint_commit(sid)
        finally:
            self._transaction_control = False

    def _savepoint_rollback(self, sid):
        self._transaction_control = True
        try:
            return super()._savepoint_rollback(sid)
        finally:
            self._transaction_control = False
            # Rolling back to a savepoint also undoes set_config calls made after it.
            self._rls_applied = None

    def _close(self):
        self._rls_applied = None
        return super()._close()

    def _set_scope(self, wanted: tuple[str, str, str]) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(_SET_SQL, wanted)
        self._rls_applied = wanted

    def _apply_tenant_scope(self, execute, sql, params, many, context):
        if self._transaction_control:
            return execute(sql, params, many, context)
        wanted = rls_settings()
        in_front = _can_go_in_front(sql, params, many, context)
        if not self.get_autocommit():
            if self._rls_applied == wanted:
                return execute(sql, params, many, context)
            if in_front:
                result = self._execute_behind_scope(execute, sql, params, context, wanted)
                self._rls_applied = wanted
                return result
            self._set_scope(wanted)
            return execute(sql, params, many, context)
        if wanted == _NO_SCOPE:
            return execute(sql, params, many, context)
        if in_front:
            # One round trip instead of four (BEGIN, set_config, statement, COMMIT): the
            # statements of one query string run as one implicit transaction, so the
            # transaction-local settings hold for the statement and end with it.
            return self._execute_behind_scope(execute, sql, params, context, wanted)
        with transaction.atomic(using=self.alias):
            self._set_scope(wanted)
            return execute(sql, params, many, context)

    @staticmethod
    def _execute_behind_scope(execute, sql, params, context, wanted):
        """The set_config call and the statement in one query string; the cursor is left
        on the statement's result."""
        if isinstance(params, dict):
            names = ("_rls_tenant", "_rls_user", "_rls_all")
            prefix = _SET_SQL.replace("%s", "%({})s").format(*names)
            result = execute(f"{prefix}; {sql}", {**params, **dict(zip(names, wanted, strict=True))}, False, context)
        else:
            result = execute(f"{_SET_SQL}; {sql}", [*wanted, *params], False, context)
        context["cursor"].cursor.nextset()
        return result
