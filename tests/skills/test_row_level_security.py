"""On PostgreSQL, row-level security keeps a tenant's skills and choices its own even for
SQL that forgets the tenant filter."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue
from tests.skills.helpers import attach, own_skill, shared_skill

pytestmark = pytest.mark.skipif(
    not settings.DATABASE_IS_POSTGRES, reason="row-level security exists on PostgreSQL only (CI runs both)"
)


def _ids(sql: str) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {row[0] for row in cursor.fetchall()}


def test_unfiltered_sql_sees_shared_skills_and_only_its_own(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    shared = shared_skill(world.a.tenant.tier)
    mine, theirs = own_skill(world.a), own_skill(world.b)
    attach(world.a, catalogue.helpdesk, mine)
    attach(world.b, catalogue.helpdesk, theirs)
    with tenant_context(world.a.tenant):
        assert _ids("SELECT id FROM skills_skill") == {shared.pk, mine.pk}
        assert _ids("SELECT skill_id FROM skills_agentskill") == {mine.pk}


def test_a_tenant_cannot_write_a_shared_skill_or_another_tenants(world):
    with tenant_context(world.a.tenant):
        for owner in ("NULL", str(world.b.tenant.pk)):
            with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO skills_skill (owner_tenant_id, key, name, description, instructions, status,"
                    f" tiers, created_at, updated_at) VALUES ({owner}, 'k', 'n', 'd', 'i', 'active', '[]',"
                    " now(), now())"
                )
