"""Every tenant table can be filtered by tenant through an index.

Row-level security adds ``tenant_id = …`` to every query, and deleting a tenant makes
PostgreSQL look up each table's rows by tenant_id: without an index leading with
tenant_id either scans the whole table, every tenant's rows. The tables a chat turn
writes drop the foreign key's own index (tenants.scoping.tenant_key_indexed_by_meta)
because an index of their Meta leads with tenant_id; this test keeps that promise for
every tenant-owned model, present and future, and the database's real indexes agree.
"""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection
from django.db.models import UniqueConstraint

from tenants.scoping import TenantOwnedModel

TENANT_MODELS = sorted(
    (m for m in apps.get_models() if issubclass(m, TenantOwnedModel) and not m._meta.proxy),
    key=lambda m: m._meta.label,
)


def _leading_fields(model) -> list[str]:
    """The first column of each index the model's definition gives its table."""
    meta = model._meta
    firsts = [index.fields[0].lstrip("-") for index in meta.indexes if index.fields]
    firsts += [c.fields[0] for c in meta.constraints if isinstance(c, UniqueConstraint) and c.fields]
    firsts += [fields[0] for fields in meta.unique_together]
    tenant = meta.get_field("tenant")
    if tenant.db_index or tenant.unique:
        firsts.append("tenant")
    return [meta.get_field(name).name for name in firsts]


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.label)
def test_every_tenant_model_has_an_index_leading_with_tenant(model):
    assert "tenant" in _leading_fields(model), (
        f"{model._meta.label} has no index leading with tenant: keep the foreign key's index "
        "or add a (tenant, …) index to its Meta"
    )


@pytest.mark.django_db
def test_the_database_has_those_indexes():
    """The migrations really built them: each tenant table has an index whose first column is tenant_id."""
    missing = []
    with connection.cursor() as cursor:
        for model in TENANT_MODELS:
            table = model._meta.db_table
            constraints = connection.introspection.get_constraints(cursor, table)
            if not any(
                (info["index"] or info["unique"]) and info["columns"] and info["columns"][0] == "tenant_id"
                for info in constraints.values()
            ):
                missing.append(table)
    assert missing == []


def test_the_turn_tables_do_not_index_tenant_twice():
    """The point of tenant_key_indexed_by_meta: no second index on tenant_id alone on the tables every turn writes."""
    from agents.models import Conversation, Invocation, Message
    from billing.models import MonthlyUsage, Reservation, UsageDaily, UsageEvent

    for model in (Conversation, Message, Invocation, UsageEvent, UsageDaily, MonthlyUsage, Reservation):
        assert model._meta.get_field("tenant").db_index is False, model._meta.label
        assert "tenant" in _leading_fields(model), model._meta.label
