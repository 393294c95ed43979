"""Operators see a tenant's API clients and SSO, can revoke a client and switch SSO off; audited."""

from __future__ import annotations

from tenants.context import all_tenants, tenant_context
from tenants.identity import services
from tenants.identity.models import ApiClient
from tenants.models import AuditLog, Membership
from tenants.roles import Role
from tenants.services import Actor, change_role, remove_member


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


# --- a paused client, as the tenant's own page shows it -------------------------------------


def _row(page: str, api: ApiClient) -> str:
    return page[page.index(f'data-client-id="{api.client_id}"') :].split("</tr>")[0]


def test_it_shows_a_paused_client_with_why_as_the_tenants_page_does(client, world, operator):
    paused = _client_of_a(world)
    with tenant_context(world.a.tenant):
        active, _ = services.create_api_client(
            Actor(user=world.a.owner, membership=world.a.memberships["owner"]),
            name="Still fine",
            scopes=["tenant:read"],
        )
        remove_member(Actor(user=world.a.owner, membership=world.a.memberships["owner"]), world.a.memberships["admin"])
    client.force_login(operator)

    page = client.get(f"/operator/tenants/{world.a.tenant.slug}/").content.decode()

    row = _row(page, paused)
    assert '<span class="badge badge-warning"' in row and ">Paused</span>" in row
    assert "Paused: Alpha Admin is no longer a member." in row
    assert "Alpha Admin" in row  # its owner
    active_row = _row(page, active)
    assert ">Active</span>" in active_row and "Paused" not in active_row
    assert "Alpha Owner" in active_row


def test_a_client_is_paused_by_its_owners_role_in_its_own_tenant_not_in_another(client, world, operator):
    # Alpha's admin is also an admin of Bravo; demoted in Alpha, Alpha's client pauses.
    api = _client_of_a(world)
    with tenant_context(world.b.tenant):
        Membership.objects.create(user=world.a.admin, role=Role.ADMIN)
    with tenant_context(world.a.tenant):
        change_role(
            Actor(user=world.a.owner, membership=world.a.memberships["owner"]),
            world.a.memberships["admin"],
            Role.MEMBER,
        )
    client.force_login(operator)

    page = client.get(f"/operator/tenants/{world.a.tenant.slug}/").content.decode()

    assert "Paused: Alpha Admin now has the Member role, which cannot manage API clients." in _row(page, api)


def test_a_revoked_client_says_revoked_not_paused(client, world, operator):
    api = _client_of_a(world)
    with tenant_context(world.a.tenant):
        remove_member(Actor(user=world.a.owner, membership=world.a.memberships["owner"]), world.a.memberships["admin"])
        services.revoke_api_client(Actor(user=world.a.owner, membership=world.a.memberships["owner"]), api)
    client.force_login(operator)

    row = _row(client.get(f"/operator/tenants/{world.a.tenant.slug}/").content.decode(), api)

    assert "Revoked" in row and "Paused" not in row and "revoke/" not in row
