"""An API client lives on its owner's rights: paused while they lack them, taken over by an admin who has them.

Every client has an owner, at first the admin who created it. When the owner leaves the
tenant, or their role could no longer have created the client or granted its scopes, the
client is paused at once: the token endpoint answers `invalid_client` saying so, and
tokens it already had (its own and those exchanged for it) are refused. The API clients
page shows it as paused with the reason; an admin whose role covers the client's scopes
takes it over (audited), which makes them its owner and the client works again, with a
new secret: whoever left may still hold the old one, so it stops working, and so does
every token issued before the take-over, the ones exchanged from them included.
"""

from __future__ import annotations

import pytest

from tenants.context import all_tenants, tenant_context
from tenants.identity import services, tokens
from tenants.identity.models import ApiClient
from tenants.identity.scopes import CLIENT_SCOPES
from tenants.roles import Role
from tenants.services import Actor, ServiceError, change_role, remove_member
from tests.identity.test_screens import messages_of, secret_on_page, signed_in, url
from tests.identity.test_token_endpoint import basic, client_token_with_agent_as_actor, exchange, post
from tests.tenants.helpers import audit_entries

pytestmark = pytest.mark.django_db

API = "/api/v1/tenants/"


def actor(side, role: str) -> Actor:
    return Actor(user=side.user(role), membership=side.memberships[role])


def new_client(side, role: str, scopes: list[str], name: str = "CI robot") -> tuple[ApiClient, str]:
    if not set(scopes) <= CLIENT_SCOPES:
        return legacy_client(side, role, scopes, name)
    with tenant_context(side.tenant):
        return services.create_api_client(actor(side, role), name=name, scopes=scopes)


def legacy_client(side, role: str, scopes: list[str], name: str) -> tuple[ApiClient, str]:
    """A client holding a scope the API clients page no longer offers (members:owners, say):
    one created before clients were limited to reading. It still lives on its owner's rights."""
    import secrets

    from tenants.identity.models import hash_secret
    from tenants.identity.oauth import api_client_id

    secret = secrets.token_urlsafe(24)
    with tenant_context(side.tenant):
        api = ApiClient.objects.create(
            name=name,
            client_id=api_client_id(side.tenant, secrets.token_hex(8)),
            secret_hash=hash_secret(secret),
            scopes=sorted(scopes),
            created_by=side.user(role),
            owner=side.user(role),
        )
    return api, secret


def token_for(client, api: ApiClient, secret: str):
    return post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(api.client_id, secret))


def api_get(client, token: str):
    return client.get(API, HTTP_AUTHORIZATION=f"Bearer {token}")


def remove(side, role: str, by: str = "owner") -> None:
    with tenant_context(side.tenant):
        remove_member(actor(side, by), side.memberships[role])


def set_role(side, role: str, new_role: str, by: str = "owner") -> None:
    with tenant_context(side.tenant):
        change_role(actor(side, by), side.memberships[role], new_role)


def take_over(side, role: str, api: ApiClient) -> tuple[ApiClient, str]:
    """The taken-over client and its new secret."""
    with tenant_context(side.tenant):
        return services.take_over_api_client(actor(side, role), api)


def assert_paused(client, api: ApiClient, secret: str) -> None:
    refused = token_for(client, api, secret)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert "paused" in refused.json()["error_description"]


# --- what pauses a client -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "happens"),
    [
        ("its owner is removed", lambda side: remove(side, "admin")),
        ("its owner becomes a member", lambda side: set_role(side, "admin", Role.MEMBER)),
        ("its owner becomes billing", lambda side: set_role(side, "admin", Role.BILLING)),
    ],
)
def test_a_client_stops_at_once_when_its_owner_loses_the_rights(client, world, what, happens):
    api, secret = new_client(world.a, "admin", ["tenant:read", "members:read"])
    token = token_for(client, api, secret).json()["access_token"]
    assert api_get(client, token).status_code == 200

    happens(world.a)

    assert api_get(client, token).status_code == 401  # the token it already had
    assert_paused(client, api, secret)  # and no new one


def test_a_token_exchanged_for_a_paused_client_stops_at_once(client, world, agents, api_client):
    exchanged = client_token_with_agent_as_actor(client, agents, api_client)
    assert api_get(client, exchanged).status_code == 200

    remove(world.a, "admin")

    assert api_get(client, exchanged).status_code == 401
    with pytest.raises(tokens.InvalidToken, match="paused"):
        tokens.validate(exchanged)


def test_a_paused_clients_token_cannot_be_exchanged(client, world, agents, api_client):
    api, secret = api_client
    token = token_for(client, api, secret).json()["access_token"]
    agent, agent_secret = agents["allowed"]
    actor_token = post(
        client, {"grant_type": "client_credentials", "client_id": agent.client_id, "client_secret": agent_secret}
    ).json()["access_token"]

    remove(world.a, "admin")

    response = exchange(client, token, actor_token, audience="tenant-portal-api")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_a_client_holding_a_scope_the_owners_new_role_lacks_is_paused_and_the_others_are_not(client, world):
    # The first owner hands the tenant over and stays on as an admin: an admin cannot
    # grant members:owners, so that client pauses; the admin-sized one keeps working.
    owners_only, owners_secret = new_client(world.a, "owner", ["tenant:read", "members:owners"], "Owner sync")
    admin_sized, admin_secret = new_client(world.a, "owner", ["tenant:read", "members:read"], "Export")
    set_role(world.a, "admin", Role.OWNER)

    set_role(world.a, "owner", Role.ADMIN, by="admin")

    assert_paused(client, owners_only, owners_secret)
    assert token_for(client, admin_sized, admin_secret).status_code == 200


def test_a_client_whose_owners_account_is_deactivated_is_paused(client, world, api_client):
    api, secret = api_client
    world.a.admin.is_active = False
    world.a.admin.save(update_fields=["is_active"])

    assert_paused(client, api, secret)


def test_a_client_works_again_when_its_owner_gets_the_rights_back(client, world, api_client):
    api, secret = api_client
    set_role(world.a, "admin", Role.MEMBER)
    assert_paused(client, api, secret)

    set_role(world.a, "admin", Role.ADMIN)

    assert token_for(client, api, secret).status_code == 200


def test_the_owners_removal_and_demotion_are_recorded_against_each_client_it_pauses(world):
    api, _ = new_client(world.a, "admin", ["tenant:read", "members:write"])
    set_role(world.a, "admin", Role.MEMBER)

    [paused] = audit_entries(world.a.tenant, "api_client.paused")
    assert paused.target_id == str(api.pk)
    assert paused.actor == world.a.owner
    assert paused.after["reason"] == "Alpha Admin now has the Member role, which cannot manage API clients."


# --- taking a paused client over ------------------------------------------------------------


def test_an_admin_takes_over_a_paused_client_and_it_works_again_with_a_new_secret(client, world, api_client):
    api, old_secret = api_client
    remove(world.a, "admin")

    taken, new_secret = take_over(world.a, "owner", api)

    assert taken.owner == world.a.owner
    assert taken.created_by == world.a.admin  # who made it stays on record
    assert new_secret != old_secret
    assert token_for(client, api, new_secret).status_code == 200
    # Whoever left may hold the old secret: it is no longer the client's.
    refused = token_for(client, api, old_secret)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    assert "paused" not in refused.json()["error_description"]
    [entry] = audit_entries(world.a.tenant, "api_client.taken_over")
    assert entry.actor == world.a.owner and entry.target_id == str(api.pk)
    assert entry.before["owner"] == world.a.admin.email and entry.after["owner"] == world.a.owner.email
    assert entry.after["secret"] == "rotated"
    assert old_secret not in str(entry.after) and new_secret not in str(entry.after)


def test_tokens_issued_before_the_take_over_stay_refused_after_it(client, world, api_client):
    api, old_secret = api_client
    before = token_for(client, api, old_secret).json()["access_token"]
    remove(world.a, "admin")

    _taken, new_secret = take_over(world.a, "owner", api)

    assert api_get(client, before).status_code == 401
    with pytest.raises(tokens.InvalidToken, match="before its credentials changed"):
        tokens.validate(before)
    after = token_for(client, api, new_secret).json()["access_token"]
    assert api_get(client, after).status_code == 200


def test_a_token_from_before_generations_existed_works_until_the_credentials_change(client, world, api_client):
    api, _ = api_client
    with tenant_context(world.a.tenant):
        api.tenant = world.a.tenant
        claims = tokens.decode(tokens.issue_client_token(api, frozenset(api.scopes)))
    del claims["credentials_generation"]
    older = tokens.sign(claims)
    assert api_get(client, older).status_code == 200

    remove(world.a, "admin")
    take_over(world.a, "owner", api)

    assert api_get(client, older).status_code == 401


@pytest.mark.parametrize("generation", [False, 0.0, "0", None])  # False and 0.0 equal 0 to Python
def test_a_token_whose_generation_is_not_a_number_we_issue_is_refused(world, api_client, generation):
    api, _ = api_client
    with tenant_context(world.a.tenant):
        api.tenant = world.a.tenant
        claims = tokens.decode(tokens.issue_client_token(api, frozenset(api.scopes)))
    claims["credentials_generation"] = generation

    with pytest.raises(tokens.InvalidToken, match="before its credentials changed"):
        tokens.validate(tokens.sign(claims))


def test_a_token_exchanged_before_the_take_over_stays_refused_after_it(client, world, agents, api_client):
    exchanged = client_token_with_agent_as_actor(client, agents, api_client)
    remove(world.a, "admin")

    take_over(world.a, "owner", api_client[0])

    assert api_get(client, exchanged).status_code == 401
    with pytest.raises(tokens.InvalidToken, match="before its credentials changed"):
        tokens.validate(exchanged)


def test_a_token_issued_before_the_take_over_cannot_be_exchanged_after_it(client, world, agents, api_client):
    api, old_secret = api_client
    before = token_for(client, api, old_secret).json()["access_token"]
    agent, agent_secret = agents["allowed"]
    remove(world.a, "admin")
    take_over(world.a, "owner", api)
    actor_token = post(
        client, {"grant_type": "client_credentials", "client_id": agent.client_id, "client_secret": agent_secret}
    ).json()["access_token"]

    response = exchange(client, before, actor_token, audience="tenant-portal-api")

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_a_client_taken_over_is_not_taken_over_again(client, world, api_client):
    api, _ = api_client
    remove(world.a, "admin")
    _taken, first_secret = take_over(world.a, "owner", api)

    # Its new owner has the rights: another admin's click (a page loaded before) changes nothing.
    with pytest.raises(ServiceError):
        take_over(world.a, "owner", api)

    assert token_for(client, api, first_secret).status_code == 200
    assert len(audit_entries(world.a.tenant, "api_client.taken_over")) == 1


def test_only_someone_whose_role_covers_the_clients_scopes_may_take_it_over(client, world):
    owners_only, secret = new_client(world.a, "owner", ["tenant:read", "members:owners"], "Owner sync")
    set_role(world.a, "admin", Role.OWNER)
    remove(world.a, "owner", by="admin")
    set_role(world.a, "member", Role.ADMIN, by="admin")  # now an admin, who cannot grant members:owners

    with pytest.raises(ServiceError, match="members:owners"):
        take_over(world.a, "member", owners_only)
    assert_paused(client, owners_only, secret)  # refused: the secret is the one it had

    _taken, new_secret = take_over(world.a, "admin", owners_only)  # an owner can
    assert token_for(client, owners_only, new_secret).status_code == 200


def test_a_client_whose_owner_has_the_rights_is_not_taken_over(world, api_client):
    api, _ = api_client

    with pytest.raises(ServiceError, match="not paused"):
        take_over(world.a, "owner", api)

    with tenant_context(world.a.tenant):
        assert ApiClient.objects.get(pk=api.pk).owner == world.a.admin


def test_a_revoked_client_is_not_taken_over(world, api_client):
    api, _ = api_client
    with tenant_context(world.a.tenant):
        services.revoke_api_client(actor(world.a, "owner"), api)
    remove(world.a, "admin")

    with pytest.raises(ServiceError, match="revoked"):
        take_over(world.a, "owner", api)


# --- the API clients page -------------------------------------------------------------------


def test_the_page_shows_a_paused_client_with_why_and_a_take_over_button(client, world, api_client):
    api, _ = api_client
    active, _ = new_client(world.a, "owner", ["tenant:read"], "Still fine")
    remove(world.a, "admin")

    page = signed_in(client, world.a.owner).get(url(world.a, "api-clients/")).content.decode()

    paused_row = page[page.index(f'data-client-id="{api.client_id}"') :].split("</tr>")[0]
    assert "Paused" in paused_row
    assert "Alpha Admin is no longer a member" in paused_row
    assert f'action="/t/alpha/api-clients/{api.pk}/take-over/"' in paused_row
    active_row = page[page.index(f'data-client-id="{active.client_id}"') :].split("</tr>")[0]
    assert "Active" in active_row and "take-over" not in active_row


def test_the_client_page_explains_the_pause(client, world, api_client):
    api, _ = api_client
    set_role(world.a, "admin", Role.MEMBER)

    page = signed_in(client, world.a.owner).get(url(world.a, f"api-clients/{api.pk}/")).content.decode()

    assert "Paused" in page
    assert "Alpha Admin now has the Member role, which cannot manage API clients." in page
    assert f'action="/t/alpha/api-clients/{api.pk}/take-over/"' in page


def test_taking_over_on_the_page_makes_you_the_owner_and_shows_the_new_secret_once(client, world, api_client):
    api, old_secret = api_client
    remove(world.a, "admin")

    response = signed_in(client, world.a.owner).post(url(world.a, f"api-clients/{api.pk}/take-over/"))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    assert "New secret for CI robot" in page and "You now own it" in page
    assert "only time the secret is shown" in page
    new_secret = secret_on_page(response)
    assert token_for(client, api, new_secret).status_code == 200
    assert token_for(client, api, old_secret).status_code == 401
    listing = client.get(url(world.a, "api-clients/")).content.decode()
    assert "Alpha Owner" in listing.split(f'data-client-id="{api.client_id}"')[1].split("</tr>")[0]
    assert new_secret not in listing
    assert new_secret not in client.get(url(world.a, f"api-clients/{api.pk}/")).content.decode()


def test_the_take_over_button_says_the_secret_changes(client, world, api_client):
    api, _ = api_client
    remove(world.a, "admin")

    page = signed_in(client, world.a.owner).get(url(world.a, f"api-clients/{api.pk}/")).content.decode()

    assert "same secret" not in page
    assert "new secret" in page
    assert "tokens issued before stop working" in page


def test_taking_over_a_client_beyond_your_role_shows_why(client, world):
    owners_only, _ = new_client(world.a, "owner", ["tenant:read", "members:owners"], "Owner sync")
    set_role(world.a, "admin", Role.OWNER)
    remove(world.a, "owner", by="admin")
    set_role(world.a, "member", Role.ADMIN, by="admin")

    page = signed_in(client, world.a.member).get(url(world.a, "api-clients/")).content.decode()
    response = client.post(url(world.a, f"api-clients/{owners_only.pk}/take-over/"))

    assert "Only an owner can take it over" in page
    assert response.status_code == 302
    assert any("members:owners" in m for m in messages_of(response))
    with tenant_context(world.a.tenant):
        assert ApiClient.objects.get(pk=owners_only.pk).owner_id == world.a.owner.pk


@pytest.mark.parametrize("role", ["member", "billing"])
def test_a_teammate_cannot_take_a_client_over(client, world, api_client, role):
    api, _ = api_client
    remove(world.a, "admin")

    response = signed_in(client, world.a.user(role)).post(url(world.a, f"api-clients/{api.pk}/take-over/"))

    assert response.status_code == 403


def test_removing_an_owner_of_clients_says_they_are_paused(client, world, api_client):
    response = signed_in(client, world.a.owner).post(url(world.a, f"members/{world.a.memberships['admin'].pk}/remove/"))

    assert any("1 API client they own is paused" in m for m in messages_of(response))


def test_the_migration_makes_each_existing_client_owned_by_its_creator(world, api_client):
    import importlib

    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    migration = importlib.import_module("tenants.identity.migrations.0004_api_client_owner")
    historical = MigrationLoader(connection).project_state(("identity", "0004_api_client_owner")).apps
    api, _ = api_client
    b_api, _ = new_client(world.b, "owner", ["tenant:read"])
    with all_tenants("test: clients from before owners existed"):
        ApiClient.unscoped.update(owner=None)

    migration.owned_by_their_creator(historical, None)

    with all_tenants("test: read them back"):
        owners = dict(ApiClient.unscoped.values_list("pk", "owner_id"))
    assert owners == {api.pk: world.a.admin.pk, b_api.pk: world.b.owner.pk}
