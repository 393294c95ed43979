"""portal.db.sql: the hand-written SQL of the chat turn keeps the ORM's tenant rules."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from portal.db import sql
from tenants.context import TenantNotSet, tenant_context
from tenants.models import AuditLog

pytestmark = pytest.mark.django_db


def _audit(tenant, action="probe.sql"):
    return AuditLog(tenant=tenant, action=action, target_repr="probe")


def test_insert_takes_the_tenant_from_the_context_and_refuses_another(world):
    with tenant_context(world.a.tenant):
        row = AuditLog(action="probe.sql", target_repr="probe")
        sql.insert(row)
        assert row.pk is not None and row.tenant_id == world.a.tenant.pk
        assert AuditLog.objects.filter(pk=row.pk).exists()
        with pytest.raises(TenantNotSet):
            sql.insert(_audit(world.b.tenant))
    with pytest.raises(TenantNotSet):
        sql.insert(AuditLog(action="probe.sql", target_repr="probe"))


def test_batch_returns_the_first_row_of_each_statement_in_order(world):
    with tenant_context(world.a.tenant):
        results = sql.batch(
            [
                ("SELECT COUNT(*) FROM tenants_membership WHERE tenant_id = %s", [world.a.tenant.pk]),
                ("SELECT %(x)s + 1", {"x": 41}),
                ("UPDATE tenants_membership SET role = role WHERE tenant_id = %s AND id = -1", [world.a.tenant.pk]),
                ("SELECT 'last'", []),
            ]
        )
    assert [r[0] if r else None for r in results] == [4, 42, None, "last"]


def test_a_statement_run_twice_in_a_rolled_back_transaction_still_runs(world):
    statement = "SELECT COUNT(*) FROM tenants_membership WHERE tenant_id = %s"
    with tenant_context(world.a.tenant):
        try:
            with transaction.atomic():
                assert sql.one(statement, [world.a.tenant.pk]) == (4,)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        # On PostgreSQL the statement stays prepared on this connection after the rollback.
        assert sql.one(statement, [world.a.tenant.pk]) == (4,)


def test_a_statement_sees_only_its_tenant_on_postgresql_even_without_the_condition(world):
    if connection.vendor != "postgresql":
        pytest.skip("row-level security exists on PostgreSQL only (CI runs both)")
    with tenant_context(world.b.tenant):
        assert sql.all_rows("SELECT DISTINCT tenant_id FROM tenants_membership", []) == [(world.b.tenant.pk,)]


@pytest.mark.django_db(transaction=True)
def test_a_not_durable_statement_commits_on_its_own(world):
    with tenant_context(world.a.tenant):
        (pk,) = sql.one_not_durable(*sql.insert_values(_audit(world.a.tenant, "probe.not_durable")))
    with tenant_context(world.a.tenant):
        assert AuditLog.objects.get(pk=pk).action == "probe.not_durable"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's query cache: PostgreSQL")
def test_psycopg_keeps_its_parse_of_a_batch_with_many_parameters(world):
    from psycopg import _queries

    statements = [("SELECT %s::int + %s::int + %s::int", [i, i, i]) for i in range(30)]  # 90 parameters
    with tenant_context(world.a.tenant):
        sql.batch(statements)  # (the first statement of a transaction carries the tenant settings too)
        sql.batch(statements)
        before = _queries._query2pg_client.cache_info().hits
        results = sql.batch(statements)
    assert results[-1] == (87,)
    assert _queries._query2pg_client.cache_info().hits > before


def test_a_thread_never_finds_half_an_insert_plan(world, monkeypatch):
    # A web process's first requests can insert the same model at the same moment. While
    # one thread is still building the model's plan, another must find no plan (and build
    # its own), never the statement without the rest: that was a KeyError under load.
    building, release = threading.Event(), threading.Event()
    passes_through = sql._passes_through

    def slow_for_the_first_builder(field):
        if threading.current_thread().name == "first-builder":
            building.set()
            release.wait(10)
        return passes_through(field)

    monkeypatch.setattr(sql, "_passes_through", slow_for_the_first_builder)
    monkeypatch.delitem(sql._INSERT_PLANS, AuditLog, raising=False)
    first = threading.Thread(target=sql.insert_fields, args=(AuditLog,), name="first-builder")
    first.start()
    try:
        assert building.wait(10)
        with tenant_context(world.a.tenant):
            statement, values = sql.insert_values(AuditLog(action="probe.sql", target_repr="probe"))
    finally:
        release.set()
        first.join(10)
    assert statement.startswith('INSERT INTO "tenants_auditlog"')
    assert len(values) == len(sql.insert_fields(AuditLog))
