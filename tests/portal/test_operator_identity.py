"""Operators see a tenant's API clients and SSO, can revoke a client and switch SSO off; audited."""

from __future__ import annotations

from tenants.context import all_tenants, tenant_context
from tenants.identity import services
from tenants.identity.models import ApiClient
from tenants.models import AuditLog
from tenants.services import Actor


def _client_of_a(world):
    actor = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        return services.create_api_client(actor, name="Robot", scopes=["tenant:read"])[0]


def test_it_lists_and_revokes_a_tenants_api_client(client, world, operator):
    api = _client_of_a(world)
    client.force_login(operator)
    page = client.get(f"/operator/tenants/{world.a.tenant.slug}/")
    assert api.client_id in page.content.decode()
    response = client.post(f"/operator/tenants/{world.a.tenant.slug}/api-clients/{api.pk}/revoke/")
    assert response.status_code == 302
    with all_tenants("test"):
        assert ApiClient.unscoped.get(pk=api.pk).revoked_at is not None
        entry = AuditLog.unscoped.filter(action="api_client.revoked").get()
    assert entry.actor == operator
    assert entry.tenant == world.a.tenant


def test_a_client_of_another_tenant_is_not_found_under_this_slug(client, world, operator):
    api = _client_of_a(world)
    client.force_login(operator)
    response = client.post(f"/operator/tenants/{world.b.tenant.slug}/api-clients/{api.pk}/revoke/")
    assert response.status_code == 404


def test_switching_sso_off_without_a_configuration_says_so(client, world, operator):
    client.force_login(operator)
    response = client.post(f"/operator/tenants/{world.a.tenant.slug}/sso/disable/", {"reason": "IdP down"}, follow=True)
    assert "has no single sign-on configured" in response.content.decode()
