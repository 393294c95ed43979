"""PostgreSQL row-level security: the database itself keeps tenants apart.

These run in CI's PostgreSQL pass (DATABASE_URL=postgres://…), where the tests
connect as the application role exactly like production. SQLite has no RLS:
there, the fail-closed managers (test_scoping.py) are the whole story.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from tenants.context import all_tenants, tenant_context, user_context
from tenants.models import AuditLog, Membership
from tenants.rls import shared_or_tenant_models, tenant_owned_models

pytestmark = pytest.mark.skipif(
    not settings.DATABASE_IS_POSTGRES, reason="row-level security exists on PostgreSQL only (CI runs both)"
)


def _scalar(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _column(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def test_it_connects_as_a_role_that_is_not_superuser_nor_bypassrls(db):
    row = None
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        row = cursor.fetchone()
    assert row == (settings.DATABASE_APP_ROLE, False, False)


def test_the_app_role_owns_no_tenant_table(db):
    tables = [m._meta.db_table for m in tenant_owned_models()]
    owners = _column("SELECT tableowner FROM pg_tables WHERE tablename = ANY(%s)", [tables])
    assert settings.DATABASE_APP_ROLE not in owners
    assert len(tables) >= 8


def test_every_tenant_owned_table_has_forced_rls_and_a_policy(db):
    assert shared_or_tenant_models() != []
    for model in [*tenant_owned_models(), *shared_or_tenant_models()]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
                [model._meta.db_table],
            )
            assert cursor.fetchone() == (True, True), model._meta.db_table
        policies = _column("SELECT policyname FROM pg_policies WHERE tablename = %s", [model._meta.db_table])
        assert policies == {"tenant_isolation"}, model._meta.db_table


def test_every_policy_reads_its_settings_once_per_statement_not_once_per_row(world):
    # current_setting() written straight into a policy runs for every row the policy
    # filters; in a sub-SELECT PostgreSQL runs it once per statement (an InitPlan).
    with tenant_context(world.a.tenant), connection.cursor() as cursor:
        for model in [*tenant_owned_models(), *shared_or_tenant_models()]:
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"EXPLAIN (VERBOSE) SELECT * FROM {table}")  # noqa: S608 (a model's table)
            plan = [row[0] for row in cursor.fetchall()]
            filters = [line for line in plan if "Filter:" in line]
            assert filters, (table, plan)
            assert not any("current_setting" in line for line in filters), (table, plan)
            assert any("InitPlan" in line for line in plan), (table, plan)


def test_a_raw_select_without_a_tenant_returns_no_rows(world):
    assert _scalar("SELECT count(*) FROM tenants_membership") == 0


def test_a_raw_select_with_tenant_a_returns_only_as_rows(world):
    with tenant_context(world.a.tenant):
        tenant_ids = _column("SELECT tenant_id FROM tenants_membership")
        count = _scalar("SELECT count(*) FROM tenants_membership")
    assert tenant_ids == {world.a.tenant.pk}
    assert count == 4


def test_the_unscoped_manager_sees_nothing_outside_all_tenants(world):
    assert Membership.unscoped.count() == 0
    with all_tenants("test"):
        assert Membership.unscoped.count() == 8


def test_a_user_sees_their_own_memberships_in_every_tenant_and_no_one_elses(world):
    from tests.factories import add_member

    add_member(world.b.tenant, world.a.owner, "member")
    with user_context(world.a.owner.pk):
        rows = _column("SELECT tenant_id FROM tenants_membership")
        users = _column("SELECT user_id FROM tenants_membership")
    assert rows == {world.a.tenant.pk, world.b.tenant.pk}
    assert users == {world.a.owner.pk}


def test_writing_a_row_for_another_tenant_is_refused_by_the_database(world):
    with tenant_context(world.a.tenant), pytest.raises(DatabaseError, match="row-level security"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tenants_membership (tenant_id, user_id, role, created_at)"
                " VALUES (%s, %s, 'member', now())",
                [world.b.tenant.pk, world.outsider.pk],
            )


def test_updates_through_a_forgotten_filter_touch_only_the_current_tenant(world):
    with tenant_context(world.a.tenant):
        with connection.cursor() as cursor:
            cursor.execute("UPDATE tenants_membership SET role = 'billing'")
            assert cursor.rowcount == 4
    with tenant_context(world.b.tenant):
        assert set(Membership.objects.values_list("role", flat=True)) == {"owner", "admin", "member", "billing"}


def test_the_audit_log_cannot_be_changed_or_deleted_by_the_app_role(world):
    with tenant_context(world.a.tenant):
        AuditLog(action="test.entry", actor=world.a.owner).save()
        for statement in ("UPDATE tenants_auditlog SET action = 'x'", "DELETE FROM tenants_auditlog"):
            with pytest.raises(DatabaseError, match="permission denied"):
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(statement)


def test_the_setting_does_not_outlive_its_transaction(transactional_db):
    from tests.factories import World

    world = World.build()
    with tenant_context(world.a.tenant):
        assert Membership.objects.count() == 4  # autocommit: its own short transaction
    # Same connection, next statement, no context: nothing left behind.
    assert _scalar("SELECT count(*) FROM tenants_membership") == 0
    assert _scalar("SELECT current_setting('app.tenant_id', true)") in ("", None)


def test_a_rolled_back_savepoint_does_not_leave_a_stale_tenant(world):
    with tenant_context(world.a.tenant):
        assert Membership.objects.count() == 4
        try:
            with transaction.atomic():
                with tenant_context(world.b.tenant):
                    assert Membership.objects.count() == 4
                    raise RuntimeError("roll back to the savepoint")
        except RuntimeError:
            pass
        assert set(Membership.objects.values_list("tenant_id", flat=True)) == {world.a.tenant.pk}
        assert _column("SELECT tenant_id FROM tenants_membership") == {world.a.tenant.pk}


def test_shared_catalogue_rows_are_seen_by_all_and_a_tenants_own_by_it_alone(world):
    from agents.models import Agent

    with all_tenants("test"):
        Agent.unscoped.create(slug="shared-helper", name="Shared helper")
        Agent.unscoped.create(slug="bravo-private", name="Bravo private", owner_tenant=world.b.tenant)
    with tenant_context(world.a.tenant):
        assert _column("SELECT slug FROM agents_agent") == {"shared-helper"}
        assert set(Agent.objects.values_list("slug", flat=True)) == {"shared-helper"}
    with tenant_context(world.b.tenant):
        assert _column("SELECT slug FROM agents_agent") == {"shared-helper", "bravo-private"}
    assert _scalar("SELECT count(*) FROM agents_agent WHERE owner_tenant_id IS NOT NULL") == 0


def test_a_tenant_cannot_write_shared_catalogue_rows(world):
    with tenant_context(world.a.tenant), pytest.raises(DatabaseError, match="row-level security"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO agents_agent (slug, name, description, instructions, offered_to_tiers, status,"
                " created_at, updated_at) VALUES ('x', 'x', '', '', '[]', 'draft', now(), now())"
            )


# --- the settings travel in the statement's own query string (portal.db.postgresql) -----


def _round_trips(fn):
    """(fn's result, how many times psycopg waited for the server while it ran)."""
    import psycopg

    calls = 0
    wait = psycopg.Connection.wait

    def counting(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        return wait(self, *args, **kwargs)

    psycopg.Connection.wait = counting
    try:
        result = fn()
    finally:
        psycopg.Connection.wait = wait
    return result, calls


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_scoped_statement_is_one_round_trip_and_rls_holds(world):
    connection.ensure_connection()
    assert connection.get_autocommit()
    with tenant_context(world.a.tenant):
        tenant_ids, trips = _round_trips(lambda: _column("SELECT tenant_id FROM tenants_membership", []))
    assert tenant_ids == {world.a.tenant.pk}
    assert trips == 1  # not BEGIN, set_config, the statement and COMMIT
    # The settings were local to that statement's implicit transaction.
    assert _scalar("SELECT coalesce(current_setting('app.tenant_id', true), '')", []) == ""
    assert _scalar("SELECT count(*) FROM tenants_membership", []) == 0


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_first_statement_carries_the_settings_and_a_new_context_resets_them(world):
    with transaction.atomic():
        with tenant_context(world.a.tenant):
            a_ids, trips = _round_trips(lambda: _column("SELECT tenant_id FROM tenants_membership", []))
            again, trips_again = _round_trips(lambda: _column("SELECT tenant_id FROM tenants_membership", []))
        with tenant_context(world.b.tenant):
            b_ids = _column("SELECT tenant_id FROM tenants_membership", [])
    assert a_ids == again == {world.a.tenant.pk}
    assert b_ids == {world.b.tenant.pk}
    assert trips <= 2  # BEGIN, then the settings and the statement together
    assert trips_again == 1


@pytest.mark.django_db(transaction=True)
def test_a_statement_with_a_literal_percent_and_no_parameters_still_gets_the_tenant(world):
    # (No parameters: the % is not escaped, so the settings go in a round trip of their own.)
    with tenant_context(world.a.tenant), connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id FROM tenants_membership WHERE 'x' NOT LIKE '100%'")
        assert {row[0] for row in cursor.fetchall()} == {world.a.tenant.pk}
