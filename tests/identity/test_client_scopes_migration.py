"""Migration identity 0006: API clients created before the API clients page offered only the
read scopes keep only those (tenants.identity.scopes.CLIENT_SCOPES)."""

from __future__ import annotations

import secrets

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from portal.db.owner import as_owner
from tenants.context import all_tenants, tenant_context
from tenants.identity import oauth
from tenants.identity.models import ApiClient, hash_secret
from tenants.identity.scopes import CLIENT_SCOPES

pytestmark = pytest.mark.django_db(transaction=True)  # migrations run outside a test's transaction

BEFORE = [("identity", "0005_api_client_credentials_generation")]
AFTER = [("identity", "0006_api_client_scopes_narrowed")]


def migrate(targets) -> None:
    with as_owner():  # as `migrate` runs them (PostgreSQL: the schema owner)
        executor = MigrationExecutor(connection)
        executor.migrate(targets)


def old_client(side, scopes: list[str], *, revoked: bool = False) -> int:
    """A client row as one created before the limit was written."""
    with tenant_context(side.tenant):
        client = ApiClient.objects.create(
            name="Robot",
            client_id=oauth.api_client_id(side.tenant, secrets.token_hex(8)),
            secret_hash=hash_secret(secrets.token_urlsafe(16)),
            scopes=scopes,
            created_by=side.owner,
            owner=side.owner,
        )
        if revoked:
            ApiClient.objects.filter(pk=client.pk).update(revoked_at=client.created_at)
    return client.pk


def test_it_narrows_every_clients_scopes_to_what_a_client_can_use(world):
    migrate(BEFORE)
    try:
        everything = old_client(world.a, ["agents:invoke", "billing:read", "kb:read", "members:write", "tenant:read"])
        chat_only = old_client(world.b, ["agents:invoke", "kb:read"])
        revoked = old_client(world.b, ["audit:read", "kb:write"], revoked=True)
        already = old_client(world.a, ["guardrails:read", "members:read"])
    finally:
        migrate(AFTER)

    with all_tenants("test: read every tenant's clients back"):
        scopes = dict(ApiClient.unscoped.values_list("pk", "scopes"))
    assert scopes == {
        everything: ["billing:read", "tenant:read"],
        chat_only: [],
        revoked: ["audit:read"],
        already: ["guardrails:read", "members:read"],
    }
    assert set().union(*scopes.values()) <= CLIENT_SCOPES


def test_the_migrations_allowed_set_is_the_one_clients_are_offered():
    import importlib

    migration = importlib.import_module("tenants.identity.migrations.0006_api_client_scopes_narrowed")
    assert migration.CLIENT_SCOPES == CLIENT_SCOPES
