"""A tenant never sees nor reviews another tenant's agent versions: the scoped manager on
every database, and row-level security on PostgreSQL underneath it."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection

from agents.registry import services
from agents.registry.models import AgentVersion
from tests.registry.helpers import actor, as_operator, draft, in_tenant, own_agent


def test_the_manager_shows_a_tenant_its_own_versions_only(world, catalogue):
    _agent_a, version_a = own_agent(world.a)
    _agent_b, version_b = own_agent(world.b)

    assert in_tenant(world.a, lambda: list(AgentVersion.objects.values_list("pk", flat=True))) == [version_a.pk]
    assert in_tenant(world.b, lambda: list(AgentVersion.objects.values_list("pk", flat=True))) == [version_b.pk]
    assert in_tenant(world.a, lambda: services.access_tenant_version(world.a.tenant, version_b.pk)) is None


def test_a_tenant_admin_cannot_review_another_tenants_version(world, catalogue):
    agent_b, version_b = own_agent(world.b, "admin")
    b_admin = actor(world.b, "admin")
    in_tenant(world.b, lambda: services.submit(b_admin.user, version_b, actor=b_admin))
    a_owner = actor(world.a, "owner")

    with pytest.raises(PermissionDenied):
        in_tenant(world.a, lambda: services.approve(a_owner.user, version_b, actor=a_owner))
    assert in_tenant(world.b, lambda: AgentVersion.objects.get(pk=version_b.pk).state) == "submitted"


def test_the_screens_answer_404_for_another_tenants_agent(client, world, catalogue):
    agent_b, version_b = own_agent(world.b, "admin")
    client.force_login(world.a.owner)
    base = f"/t/{world.a.tenant.slug}/catalogue/own/{agent_b.pk}/"
    assert client.get(base).status_code == 404
    assert client.post(base + "versions/1/approve/").status_code == 404
    assert client.get(f"/t/{world.b.tenant.slug}/catalogue/").status_code == 404


@pytest.mark.skipif(not settings.DATABASE_IS_POSTGRES, reason="row-level security exists on PostgreSQL only")
def test_row_level_security_hides_another_tenants_versions_from_a_raw_select(world, catalogue, operator):
    _agent_a, version_a = own_agent(world.a)
    _agent_b, version_b = own_agent(world.b)
    _shared, shared_version = as_operator(lambda: services.create_agent(operator, draft(name="Shared one")))

    def raw_ids():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM registry_agentversion")  # no filter: only RLS decides
            return {row[0] for row in cursor.fetchall()}

    assert in_tenant(world.a, raw_ids) == {version_a.pk, shared_version.pk}
    assert in_tenant(world.b, raw_ids) == {version_b.pk, shared_version.pk}
    # No tenant in the context: the shared agents' versions only, like the shared catalogue rows.
    assert raw_ids() == {shared_version.pk}
